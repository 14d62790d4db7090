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

async function upload(query: string): Promise<Response> {
  const form = new FormData()
  for (const e of await readdir(folder, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue
    const full = join(e.parentPath, e.name)
    form.append(relative(folder, full), new Blob([await readFile(full)]), e.name)
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
})
