/**
 * POST /v1/admin/models with replace=true: the edge that took the upload
 * answers with the new manifest on the next request, not the one its catalog
 * kept from before (for up to the listing's lifetime).
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { createModelCatalog } from '../../core/records/model-catalog.js'
import { writeByoFolder } from '../../test/helpers/byo-fixtures.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'

let root: string
let folder: string
let t: TestEdge

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-admin-models-'))
  folder = (
    await writeByoFolder(join(root, 'folder'), {
      heads: 4,
      kvHeads: 2,
      tied: true,
      positionIds: true,
      dtype: 'fp32',
      externalData: false,
      configStyle: 'llama',
    })
  ).dir
  // A catalog that keeps its listing longer than this test runs: only the route can refresh it.
  const store = new MemoryObjectStore()
  t = await makeTestEdge({
    worker: false,
    deps: { store, models: createModelCatalog(store, { ttlMs: 600_000 }) },
  })
})
afterAll(async () => {
  await t.close()
  await rm(root, { recursive: true, force: true })
})

async function upload(query: string, dir = folder): Promise<Response> {
  const form = new FormData()
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue
    const full = join(e.parentPath, e.name)
    form.append(relative(dir, full), new Blob([await readFile(full)]), e.name)
  }
  return t.app.request(`/v1/admin/models?${query}`, {
    method: 'POST',
    headers: t.auth(t.keys.admin),
    body: form,
  })
}

const contextOf = async (id: string) => {
  const res = await t.app.request(`/v1/models/${id}`, { headers: t.auth(t.keys.admin) })
  expect(res.status).toBe(200)
  return ((await res.json()) as { context_length: number }).context_length
}

describe('POST /v1/admin/models', () => {
  it('a replaced model is answered with its new manifest on the next request', async () => {
    const first = await upload('name=byo-replace')
    expect(first.status, await first.clone().text()).toBe(201)
    expect(await contextOf('byo-replace')).toBe(256)
    const config = join(folder, 'config.json')
    const c = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>
    await writeFile(config, JSON.stringify({ ...c, max_position_embeddings: 128 }))
    const second = await upload('name=byo-replace&replace=true')
    expect(second.status, await second.clone().text()).toBe(201)
    expect(((await second.json()) as { context_length: number }).context_length).toBe(128)
    expect(await contextOf('byo-replace')).toBe(128)
  })
  it("a tokenizer whose pre-tokenizer splits on (a+)+$ is refused with a 400 naming the pattern's place", async () => {
    const dir = join(root, 'redos')
    await writeByoFolder(dir, {
      heads: 4,
      kvHeads: 2,
      tied: true,
      positionIds: true,
      dtype: 'fp32',
      externalData: false,
      configStyle: 'llama',
    })
    const path = join(dir, 'tokenizer.json')
    const tok = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>
    tok.pre_tokenizer = { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false }
    await writeFile(path, JSON.stringify(tok))
    const res = await upload('name=byo-redos', dir)
    expect(res.status).toBe(400)
    const body = (await res.json()) as { error: { message: string; code: string; param: string } }
    expect(body.error.message).toContain(`'tokenizer.json' pre_tokenizer.pattern.Regex "(a+)+$" is not safe`)
    expect(body.error.code).toBe('invalid_model')
    const listed = await t.app.request('/v1/models/byo-redos', { headers: t.auth(t.keys.admin) })
    expect(listed.status).toBe(404)
  })
})
