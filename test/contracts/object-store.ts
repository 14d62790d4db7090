/**
 * Contract suite for the ObjectStore port (core/ports/object-store.ts). Every
 * adapter's test file calls `testObjectStore({ name, make })` and nothing else;
 * the suite never skips.
 *
 * Conditional puts: a store that says `supportsConditionalPut: true` must
 * enforce ifNoneMatch/ifMatch exactly, under races between clients; a store
 * that says `false` must refuse a conditional put (throw, write nothing)
 * rather than write unconditionally. Both branches are tested, whichever the
 * store claims.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { type ObjectStore, PreconditionFailedError } from '../../core/ports/object-store.js'

export interface MadeObjectStore {
  /** A fresh, empty store. */
  store: ObjectStore
  /** A second client of the same objects (another process, as far as the adapter can tell). */
  connect: () => Promise<ObjectStore>
  cleanup?: () => Promise<void>
}

export interface ObjectStoreContractOptions {
  name: string
  make: () => Promise<MadeObjectStore>
}

const text = (b: Uint8Array | null) => (b === null ? null : Buffer.from(b).toString('utf8'))

async function readAll(stream: ReadableStream<Uint8Array>): Promise<{ bytes: Buffer; chunks: number }> {
  const parts: Uint8Array[] = []
  for await (const c of stream as unknown as AsyncIterable<Uint8Array>) parts.push(c)
  return { bytes: Buffer.concat(parts), chunks: parts.length }
}

function streamOf(bytes: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let off = 0
  return new ReadableStream({
    pull(controller) {
      if (off >= bytes.length) return controller.close()
      controller.enqueue(bytes.slice(off, off + chunk))
      off += chunk
    },
  })
}

/** Deterministic pseudo-random bytes (xorshift), so a mismatch is reproducible. */
function bytesOf(n: number, seed = 42): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

export function testObjectStore({ name, make }: ObjectStoreContractOptions) {
  describe(`ObjectStore contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.store.close?.())
      return made
    }
    const connect = async (made: MadeObjectStore) => {
      const other = await made.connect()
      cleanups.push(async () => other.close?.())
      return other
    }

    it('puts, gets and heads an object with its content type and metadata', async () => {
      const { store } = await setup()
      const before = Date.now()
      const { etag } = await store.put('files/hello.json', '{"hello":"world"}', {
        contentType: 'application/json',
        metadata: { purpose: 'fine-tune', 'original-name': 'hello.json' },
      })
      expect(typeof etag).toBe('string')
      expect(etag.length).toBeGreaterThan(0)
      expect(text(await store.get('files/hello.json'))).toBe('{"hello":"world"}')
      const info = await store.head('files/hello.json')
      expect(info).toMatchObject({
        key: 'files/hello.json',
        size: 17,
        etag,
        contentType: 'application/json',
        metadata: { purpose: 'fine-tune', 'original-name': 'hello.json' },
      })
      expect(info?.lastModified).toBeInstanceOf(Date)
      // Some backends keep whole seconds.
      expect(info!.lastModified.getTime()).toBeGreaterThanOrEqual(before - 2000)
      expect(info!.lastModified.getTime()).toBeLessThanOrEqual(Date.now() + 2000)
    })

    it('reads a missing key as null and deletes it without error', async () => {
      const { store } = await setup()
      expect(await store.get('nope')).toBeNull()
      expect(await store.getStream('nope')).toBeNull()
      expect(await store.head('nope')).toBeNull()
      await store.delete('nope')
      await store.put('dir/inner', 'x')
      expect(await store.get('dir')).toBeNull() // a "folder" is not an object
      expect(await store.head('dir/')).toBeNull()
    })

    it('overwrites (new etag, new bytes) and deletes', async () => {
      const { store } = await setup()
      const a = await store.put('k', 'first', { contentType: 'text/plain', metadata: { v: '1' } })
      const b = await store.put('k', 'second, longer')
      expect(b.etag).not.toBe(a.etag)
      expect(text(await store.get('k'))).toBe('second, longer')
      const info = await store.head('k')
      expect(info).toMatchObject({ size: 14, etag: b.etag })
      expect(info?.metadata?.v).toBeUndefined() // a put replaces the metadata too
      await store.delete('k')
      expect(await store.get('k')).toBeNull()
      expect(await store.head('k')).toBeNull()
    })

    it('is binary safe, empty objects included', async () => {
      const { store } = await setup()
      const all = Uint8Array.from({ length: 512 }, (_, i) => i % 256)
      await store.put('bin/all-bytes', all, { contentType: 'application/octet-stream' })
      expect(Buffer.from((await store.get('bin/all-bytes'))!)).toEqual(Buffer.from(all))
      await store.put('bin/empty', new Uint8Array(0))
      expect((await store.get('bin/empty'))?.length).toBe(0)
      expect((await store.head('bin/empty'))?.size).toBe(0)
      const utf8 = 'Grüße 世界 🚀\u0000\r\n'
      await store.put('bin/utf8', utf8)
      expect(text(await store.get('bin/utf8'))).toBe(utf8)
      expect((await store.head('bin/utf8'))?.size).toBe(Buffer.byteLength(utf8))
    })

    it('streams a large object in and out (5 MiB)', async () => {
      const { store } = await setup()
      const big = bytesOf(5 * 1024 * 1024 + 123)
      const { etag } = await store.put('models/big.bin', streamOf(big), {
        contentType: 'application/octet-stream',
      })
      expect((await store.head('models/big.bin'))?.size).toBe(big.length)
      expect((await store.head('models/big.bin'))?.etag).toBe(etag)
      const stream = await store.getStream('models/big.bin')
      expect(stream).not.toBeNull()
      const { bytes, chunks } = await readAll(stream!)
      expect(bytes.length).toBe(big.length)
      expect(bytes.equals(Buffer.from(big))).toBe(true)
      expect(chunks).toBeGreaterThan(1) // streamed, not one buffer
      expect(Buffer.from((await store.get('models/big.bin'))!).equals(Buffer.from(big))).toBe(true)
    })

    it('streams a large object in under a condition', async () => {
      const { store } = await setup()
      const v1 = bytesOf(5 * 1024 * 1024 + 7, 1)
      const v2 = bytesOf(5 * 1024 * 1024 + 9, 2)
      const { etag } = await store.put('models/cas.bin', streamOf(v1))
      if (!store.supportsConditionalPut) {
        await expect(store.put('models/cas.bin', streamOf(v2), { ifMatch: etag })).rejects.toThrow()
        expect((await store.head('models/cas.bin'))?.size).toBe(v1.length)
        return
      }
      const exists = await store
        .put('models/cas.bin', streamOf(v2), { ifNoneMatch: '*' })
        .catch((e: unknown) => e)
      expect(exists).toBeInstanceOf(PreconditionFailedError)
      expect((await store.head('models/cas.bin'))?.etag).toBe(etag)
      const swapped = await store.put('models/cas.bin', streamOf(v2), { ifMatch: etag })
      expect(swapped.etag).not.toBe(etag)
      const got = await readAll((await store.getStream('models/cas.bin'))!)
      expect(got.bytes.equals(Buffer.from(v2))).toBe(true)
      const stale = await store
        .put('models/cas.bin', streamOf(v1), { ifMatch: etag })
        .catch((e: unknown) => e)
      expect(stale).toBeInstanceOf(PreconditionFailedError)
    })

    it('keeps keys apart: nested, similar and unusual names', async () => {
      const { store } = await setup()
      // No `.` or `..` segments: HTTP clients and servers may normalize them away (S3's docs warn against them).
      const keys = ['a', 'a/b', 'a/b/c', 'a b', 'ä/ü+ß=%.txt', 'a.b/.hidden', 'weird/~obj', 'tilde~', '#?&']
      for (const k of keys) await store.put(k, `v:${k}`)
      for (const k of keys) expect(text(await store.get(k))).toBe(`v:${k}`)
      const listed = (await store.list('')).objects.map((o) => o.key)
      expect(listed).toEqual([...keys].sort())
    })

    it('lists by prefix in key order, page by page', async () => {
      const { store } = await setup()
      const keys = [
        'files/tenant_a/file_3',
        'files/tenant_a/file_1',
        'files/tenant_a/file_2',
        'files/tenant_ab/file_9',
        'files/tenant_a/sub/file_4',
        'files/tenant_b/file_5',
        'models/mini/config.json',
      ]
      for (const k of keys) await store.put(k, k, { contentType: 'text/plain' })
      const page = await store.list('files/tenant_a/')
      expect(page.objects.map((o) => o.key)).toEqual([
        'files/tenant_a/file_1',
        'files/tenant_a/file_2',
        'files/tenant_a/file_3',
        'files/tenant_a/sub/file_4',
      ])
      expect(page.cursor).toBeUndefined()
      const first = page.objects[0]
      expect(first).toMatchObject({ key: 'files/tenant_a/file_1', size: 'files/tenant_a/file_1'.length })
      expect(first.etag).toBe((await store.head(first.key))?.etag)
      expect(first.lastModified).toBeInstanceOf(Date)

      // A prefix that is not a folder.
      expect((await store.list('files/tenant_a')).objects).toHaveLength(5)
      expect((await store.list('files/tenant_c')).objects).toEqual([])
      expect((await store.list('')).objects.map((o) => o.key)).toEqual([...keys].sort())

      const seen: string[] = []
      let cursor: string | undefined
      let pages = 0
      do {
        const p = await store.list('files/', { limit: 2, cursor })
        expect(p.objects.length).toBeLessThanOrEqual(2)
        seen.push(...p.objects.map((o) => o.key))
        cursor = p.cursor
        pages++
      } while (cursor && pages < 10)
      expect(seen).toEqual(keys.filter((k) => k.startsWith('files/')).sort())
      expect(pages).toBe(3)
    })

    it('lists more than one page at the default size', async () => {
      const { store } = await setup()
      await Promise.all(
        Array.from({ length: 30 }, (_, i) => store.put(`many/${String(i).padStart(3, '0')}`, `${i}`)),
      )
      const all = await store.list('many/')
      expect(all.objects).toHaveLength(30)
      expect(all.cursor).toBeUndefined()
      const small = await store.list('many/', { limit: 29 })
      expect(small.objects).toHaveLength(29)
      const rest = await store.list('many/', { limit: 29, cursor: small.cursor })
      expect(rest.objects.map((o) => o.key)).toEqual(['many/029'])
      expect(rest.cursor).toBeUndefined()
    })

    it('a second client sees the same objects', async () => {
      const made = await setup()
      const other = await connect(made)
      await made.store.put('shared/k', 'v1')
      expect(text(await other.get('shared/k'))).toBe('v1')
      await other.delete('shared/k')
      expect(await made.store.get('shared/k')).toBeNull()
    })

    it('enforces conditional puts exactly as supportsConditionalPut says', async () => {
      const { store } = await setup()
      if (!store.supportsConditionalPut) {
        // A store that cannot enforce conditions must refuse them, not ignore them.
        await expect(store.put('cond/k', 'x', { ifNoneMatch: '*' })).rejects.toThrow()
        expect(await store.head('cond/k')).toBeNull()
        const { etag } = await store.put('cond/k', 'v1')
        await expect(store.put('cond/k', 'v2', { ifMatch: etag })).rejects.toThrow()
        expect(text(await store.get('cond/k'))).toBe('v1')
        return
      }
      const created = await store.put('cond/k', 'v1', { ifNoneMatch: '*' })
      const again = await store.put('cond/k', 'v1-again', { ifNoneMatch: '*' }).catch((e: unknown) => e)
      expect(again).toBeInstanceOf(PreconditionFailedError)
      expect(text(await store.get('cond/k'))).toBe('v1')

      const swapped = await store.put('cond/k', 'v2', { ifMatch: created.etag })
      expect(swapped.etag).not.toBe(created.etag)
      const stale = await store.put('cond/k', 'v3', { ifMatch: created.etag }).catch((e: unknown) => e)
      expect(stale).toBeInstanceOf(PreconditionFailedError)
      expect(text(await store.get('cond/k'))).toBe('v2')

      const missing = await store.put('cond/none', 'x', { ifMatch: created.etag }).catch((e: unknown) => e)
      expect(missing).toBeInstanceOf(PreconditionFailedError)
      expect(await store.head('cond/none')).toBeNull()
    })

    it('lets exactly one of several racing clients create a key, and compare-and-swap never loses an update', async () => {
      const made = await setup()
      const other = await connect(made)
      const { store } = made
      const clients = [store, other, store, other, store, other]
      if (!store.supportsConditionalPut) {
        const results = await Promise.allSettled(
          clients.map((c, i) => c.put('race/k', `w${i}`, { ifNoneMatch: '*' })),
        )
        expect(results.every((r) => r.status === 'rejected')).toBe(true)
        expect(await store.head('race/k')).toBeNull()
        return
      }
      const results = await Promise.allSettled(
        clients.map((c, i) => c.put('race/k', `w${i}`, { ifNoneMatch: '*' })),
      )
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []))
      expect(won).toHaveLength(1)
      for (const r of results)
        if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(PreconditionFailedError)
      expect(text(await other.get('race/k'))).toBe(`w${won[0]}`)

      // A counter incremented by read + put-if-match from several clients at once.
      await store.put('race/counter', '0')
      const increment = async (c: ObjectStore) => {
        for (let attempt = 0; attempt < 100; attempt++) {
          const info = await c.head('race/counter')
          const value = Number(text(await c.get('race/counter')))
          const check = await c.head('race/counter')
          if (!info || check?.etag !== info.etag) continue // changed between head and get
          try {
            await c.put('race/counter', String(value + 1), { ifMatch: info.etag })
            return
          } catch (err) {
            if (!(err instanceof PreconditionFailedError)) throw err
          }
        }
        throw new Error('too many retries')
      }
      await Promise.all(clients.map(increment))
      expect(text(await store.get('race/counter'))).toBe(String(clients.length))
    })
  })
}
