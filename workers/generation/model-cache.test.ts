import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { ApiError } from '../../core/errors.js'
import { createMetrics } from '../../core/metrics.js'
import { manifestKey } from '../../core/model-manifest.js'
import { ModelCache } from './model-cache.js'

/** Publishes a fake model: `weights.bin` of `size` bytes and a config. */
async function publishFake(store: MemoryObjectStore, id: string, size: number) {
  const { createHash } = await import('node:crypto')
  const files = {
    'config.json': new TextEncoder().encode(JSON.stringify({ id })),
    'sub/weights.bin': new Uint8Array(size).map((_, i) => (i * 7 + id.length) & 255),
  }
  const list = []
  for (const [path, bytes] of Object.entries(files)) {
    await store.put(`models/${id}/${path}`, bytes)
    list.push({ path, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
  }
  await store.put(
    manifestKey(id),
    JSON.stringify({ id, owner: null, created: 1, context_length: 64, files: list }),
  )
}

interface Fake {
  id: string
  folder: string
  size: number
  disposed: boolean
}

let store: MemoryObjectStore
let opened: Fake[]
const makeCache = async (budgetBytes: number, dir?: string) => {
  const metrics = createMetrics()
  const cache = new ModelCache<Fake>({
    store,
    dir: dir ?? (await mkdtemp(join(tmpdir(), 'pgpt-cache-'))),
    budgetBytes,
    metrics,
    open: async (folder, manifest) => {
      await new Promise((r) => setTimeout(r, 10))
      const size = (await readFile(join(folder, 'sub/weights.bin'))).length
      const fake = { id: manifest.id, folder, size, disposed: false }
      opened.push(fake)
      return fake
    },
    sizeOf: (m) => m.size,
    dispose: (m) => {
      m.disposed = true
    },
  })
  return { cache, metrics }
}

beforeEach(async () => {
  store = new MemoryObjectStore()
  opened = []
  await publishFake(store, 'a', 1000)
  await publishFake(store, 'b', 1000)
  await publishFake(store, 'c', 1000)
})

describe('ModelCache', () => {
  it('downloads, verifies and opens a model; concurrent loads share one download', async () => {
    const { cache, metrics } = await makeCache(10_000)
    const leases = await Promise.all([cache.acquire('a'), cache.acquire('a'), cache.acquire('a')])
    expect(opened).toHaveLength(1)
    expect(store.reads.get('models/a/sub/weights.bin')).toBe(1)
    expect(leases.every((l) => l.model === leases[0].model)).toBe(true)
    const bytes = await readFile(join(leases[0].model.folder, 'sub/weights.bin'))
    expect(bytes[3]).toBe((3 * 7 + 1) & 255)
    const text = await metrics.registry.metrics()
    expect(text).toMatch(/result="miss"\} 1/)
    expect(text).toMatch(/result="hit"\} 2/)
    expect(text).toMatch(/pgpt:model_load_duration_seconds_count\{model="a"\} 1/)
    for (const l of leases) l.release()
  })

  it('reuses verified files on disk across cache instances', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-cache-'))
    const first = await makeCache(10_000, dir)
    ;(await first.cache.acquire('a')).release()
    const second = await makeCache(10_000, dir)
    ;(await second.cache.acquire('a')).release()
    expect(store.reads.get('models/a/sub/weights.bin')).toBe(1)
    expect(opened).toHaveLength(2)
  })

  it('evicts the least recently used idle model over the budget, never one in use', async () => {
    const { cache } = await makeCache(2500)
    const a = await cache.acquire('a')
    const b = await cache.acquire('b')
    b.release()
    a.release() // a is now the most recently used
    const c = await cache.acquire('c')
    expect(cache.loaded()).toEqual(['a', 'c'])
    expect(opened.find((m) => m.id === 'b')!.disposed).toBe(true)
    expect(cache.usedBytes()).toBe(2000)
    // a and c held: loading b again goes over budget but evicts nothing in use
    const a2 = await cache.acquire('a')
    const b2 = await cache.acquire('b')
    expect(cache.loaded().sort()).toEqual(['a', 'b', 'c'])
    expect(opened.filter((m) => m.disposed)).toHaveLength(1)
    c.release()
    // releasing c makes it the only idle one: it goes
    expect(cache.loaded().sort()).toEqual(['a', 'b'])
    a2.release()
    b2.release()
    await cache.close()
    expect(opened.every((m) => m.disposed)).toBe(true)
  })

  it('keeps a model larger than the whole budget, alone', async () => {
    const { cache } = await makeCache(500)
    const a = await cache.acquire('a')
    a.release()
    expect(cache.loaded()).toEqual(['a'])
    ;(await cache.acquire('b')).release()
    expect(cache.loaded()).toEqual(['b'])
  })

  it('fails with model_not_found for unknown ids and model_load_failed on a checksum mismatch', async () => {
    const { cache } = await makeCache(10_000)
    const errorOf = (p: Promise<unknown>) =>
      p.then(
        () => null,
        (e: ApiError) => e,
      )
    const missing = await errorOf(cache.acquire('zzz'))
    expect(missing).toBeInstanceOf(ApiError)
    expect([missing!.status, missing!.code]).toEqual([404, 'model_not_found'])
    await store.put('models/b/sub/weights.bin', new Uint8Array(1000)) // tampered
    const bad = await errorOf(cache.acquire('b'))
    expect([bad!.status, bad!.code]).toEqual([500, 'model_load_failed'])
    expect(bad!.message).toMatch(/checksum mismatch for 'sub\/weights.bin'/)
    // a failed load is not cached: fixing the object makes the next acquire work
    await publishFake(store, 'b', 1000)
    ;(await cache.acquire('b')).release()
    expect(cache.loaded()).toContain('b')
  })

  it('refuses manifests with unsafe paths', async () => {
    await store.put(
      manifestKey('evil'),
      JSON.stringify({
        id: 'evil',
        owner: null,
        created: 1,
        context_length: 8,
        files: [{ path: '../../x', size: 0, sha256: 'e'.repeat(64) }],
      }),
    )
    const { cache } = await makeCache(10_000)
    await expect(cache.acquire('evil')).rejects.toMatchObject({ code: 'model_load_failed' })
  })
})
