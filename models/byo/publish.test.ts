import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { readManifest } from '../../core/model-manifest.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { createModelCatalog } from '../../core/records/model-catalog.js'
import { writeByoFolder } from '../../test/helpers/byo-fixtures.js'
import { dirSource } from './fs-source.js'
import { InvalidModelIdError, PublishConflictError, publishByoModel } from './publish.js'
import { memorySource } from './source.js'
import { ModelValidationError } from './validate.js'

let root: string
let folder: string
let store: FsObjectStore

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-byo-publish-'))
  folder = (
    await writeByoFolder(join(root, 'folder'), {
      heads: 4,
      kvHeads: 4,
      tied: false,
      positionIds: false,
      dtype: 'fp32',
      externalData: true,
      configStyle: 'gpt2',
    })
  ).dir
  store = new FsObjectStore({ root: join(root, 'store') })
})
afterAll(() => rm(root, { recursive: true, force: true }))

const catalog = () => createModelCatalog(store, { ttlMs: 0 })

describe('publishByoModel', () => {
  it('publishes for one tenant: files hashed, manifest last, invisible to another tenant', async () => {
    const { manifest } = await publishByoModel(store, dirSource(folder), { id: 'team-gpt2', owner: 'acme' })
    expect(manifest).toMatchObject({
      id: 'team-gpt2',
      owner: 'acme',
      context_length: 256,
      source: 'published',
    })
    for (const f of manifest.files) {
      const local = await readFile(join(folder, f.path))
      expect(f.sha256).toBe(createHash('sha256').update(local).digest('hex'))
      expect(f.size).toBe(local.byteLength)
      expect(Buffer.from((await store.get(`models/team-gpt2/${f.path}`))!).equals(local)).toBe(true)
    }
    expect(manifest.files.map((f) => f.path)).toContain('onnx/model.onnx_data')
    expect(await readManifest(store, 'team-gpt2')).toEqual(manifest)

    const c = catalog()
    expect((await c.list('acme')).map((m) => m.id)).toEqual(['team-gpt2'])
    expect(await c.list('globex')).toEqual([])
    expect(await c.get('globex', 'team-gpt2')).toBeNull()
    expect((await c.get('acme', 'team-gpt2'))?.owner).toBe('acme')
    expect((await c.tokenCounter((await c.get('acme', 'team-gpt2'))!)).method).toBe('tokenizer')
  })

  it('a public model (owner null) is visible to every tenant', async () => {
    await publishByoModel(store, dirSource(folder), { id: 'shared-gpt2', owner: null })
    const c = catalog()
    expect((await c.list('globex')).map((m) => m.id)).toEqual(['shared-gpt2'])
    expect((await c.list('acme')).map((m) => m.id)).toEqual(['shared-gpt2', 'team-gpt2'])
  })

  it('refuses to take over another owner’s or a bundled model, and replaces only when asked', async () => {
    await expect(
      publishByoModel(store, dirSource(folder), { id: 'team-gpt2', owner: 'globex' }),
    ).rejects.toThrow(PublishConflictError)
    await expect(
      publishByoModel(store, dirSource(folder), { id: 'team-gpt2', owner: 'acme' }),
    ).rejects.toThrow("a model 'team-gpt2' already exists; pass replace to overwrite it")
    const before = (await readManifest(store, 'team-gpt2'))!
    await new Promise((r) => setTimeout(r, 1100))
    await publishByoModel(store, dirSource(folder), { id: 'team-gpt2', owner: 'acme', replace: true })
    expect((await readManifest(store, 'team-gpt2'))!.created).toBeGreaterThan(before.created)

    await publishModelFolder(store, folder, {
      id: 'bundled-one',
      owner: null,
      contextLength: 256,
      source: 'bundled',
    })
    await expect(
      publishByoModel(store, dirSource(folder), { id: 'bundled-one', owner: null, replace: true }),
    ).rejects.toThrow("a model 'bundled-one' already exists and belongs to someone else; choose another name")
    await expect(publishByoModel(store, dirSource(folder), { id: '../x', owner: null })).rejects.toThrow(
      InvalidModelIdError,
    )
  })

  it('publishes from memory (an upload) with the same files and hashes as from disk', async () => {
    const disk = dirSource(folder)
    const files = new Map<string, Uint8Array>()
    for (const p of await disk.list()) files.set(p, (await disk.read(p))!)
    const { manifest } = await publishByoModel(store, memorySource(files), {
      id: 'from-memory',
      owner: 'acme',
    })
    const fromDisk = (await readManifest(store, 'shared-gpt2'))!
    expect(manifest.files).toEqual(fromDisk.files)
  })

  it('stores nothing when the folder is not servable', async () => {
    const broken = await writeByoFolder(join(root, 'broken'), {
      heads: 4,
      kvHeads: 2,
      tied: true,
      positionIds: true,
      dtype: 'fp32',
      externalData: true,
      configStyle: 'llama',
    })
    await unlink(join(broken.dir, 'onnx/model.onnx_data'))
    await expect(
      publishByoModel(store, dirSource(broken.dir), { id: 'broken', owner: 'acme' }),
    ).rejects.toThrow(ModelValidationError)
    expect((await store.list('models/broken/')).objects).toEqual([])
  })
})
