/**
 * A batch whose planning job fails before the batch moves on (a crash loop
 * that dead-letters it, say) ends `failed` with the job's reason instead of
 * staying `validating`: nothing accepted is left hanging.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { manifestKey } from '../../core/model-manifest.js'
import { getBatch, updateBatch } from '../../core/records/batches.js'
import { createModelCatalog } from '../../core/records/model-catalog.js'
import { makeTestEdge, manifest, type TestEdge } from '../../test/helpers/edge-harness.js'

let t: TestEdge
afterEach(async () => {
  await t?.close()
})

const line = (i: number) =>
  JSON.stringify({
    custom_id: `r${i}`,
    method: 'POST',
    url: '/v1/completions',
    body: { model: 'echo-1', prompt: 'a b', max_tokens: 2 },
  })

describe('GET /v1/batches/{id}', () => {
  it('ends a batch failed, with the reason, when its planning job failed', async () => {
    t = await makeTestEdge({ worker: false })
    const form = new FormData()
    form.set('purpose', 'batch')
    form.set('file', new Blob([`${line(1)}\n${line(2)}\n`], { type: 'application/jsonl' }), 'in.jsonl')
    const file = (await (
      await t.app.request('/v1/files', { method: 'POST', headers: t.auth(t.keys.admin), body: form })
    ).json()) as { id: string }
    const created = await t.app.request('/v1/batches', {
      method: 'POST',
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' }),
    })
    expect(created.status).toBe(200)
    const batch = (await created.json()) as { id: string; status: string }
    expect(batch.status).toBe('validating')
    const get = async () =>
      (await (await t.app.request(`/v1/batches/${batch.id}`, { headers: t.auth(t.keys.admin) })).json()) as {
        status: string
        failed_at: number | null
        errors: { data: Array<{ code: string; message: string }> } | null
      }
    expect((await get()).status).toBe('validating')

    await t.deps.jobs.transition(batch.id, 'failed', {
      error: { code: 'dead_lettered', message: 'dead-lettered after 5 deliveries' },
    })
    const after = await get()
    expect(after.status).toBe('failed')
    expect(after.failed_at).toBeGreaterThan(0)
    expect(after.errors?.data).toEqual([
      expect.objectContaining({ code: 'dead_lettered', message: 'dead-lettered after 5 deliveries' }),
    ])
    // Another tenant's batch key still cannot see it.
    const otherKey = await t.key('t2', ['batch'])
    const other = await t.app.request(`/v1/batches/${batch.id}`, { headers: t.auth(otherKey) })
    expect(other.status).toBe(404)
  })
})

/** Uploads a batch input file; its id. */
async function uploadBatchFile(text: string, fields: Record<string, string> = {}, secret = t.keys.admin) {
  const form = new FormData()
  form.set('purpose', 'batch')
  form.set('file', new Blob([text], { type: 'application/jsonl' }), 'in.jsonl')
  for (const [k, v] of Object.entries(fields)) form.set(k, v)
  const res = await t.app.request('/v1/files', { method: 'POST', headers: t.auth(secret), body: form })
  expect(res.status).toBe(200)
  return ((await res.json()) as { id: string }).id
}

describe('POST /v1/batches and expiry', () => {
  const uploadInput = (fields: Record<string, string> = {}) => uploadBatchFile(`${line(1)}\n`, fields)
  const create = (body: Record<string, unknown>) =>
    t.app.request('/v1/batches', {
      method: 'POST',
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      body: JSON.stringify({ endpoint: '/v1/completions', completion_window: '24h', ...body }),
    })

  it('refuses an expired input file with a 400 that says it expired', async () => {
    let now = Date.UTC(2026, 0, 1)
    t = await makeTestEdge({ worker: false, deps: { clock: () => now } })
    const id = await uploadInput({ 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600' })
    now += 3600_000
    const res = await create({ input_file_id: id })
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: unknown }).error).toMatchObject({
      code: 'invalid_input_file',
      param: 'input_file_id',
      message: `The input file '${id}' expired at 2026-01-01T01:00:00.000Z; upload it again.`,
    })
    const listed = await t.app.request('/v1/batches', { headers: t.auth(t.keys.admin) })
    expect(((await listed.json()) as { data: unknown[] }).data).toEqual([]) // nothing was made
  })

  it('keeps output_expires_after (or the configured default) for the output files, and checks its bounds', async () => {
    t = await makeTestEdge({ worker: false, env: { PGPT_BATCH_FILE_RETENTION_DAYS: '3' } })
    const id = await uploadInput()
    const given = await create({
      input_file_id: id,
      output_expires_after: { anchor: 'created_at', seconds: 7200 },
    })
    expect(given.status).toBe(200)
    const a = (await given.json()) as { id: string }
    expect((await getBatch(t.deps.store, 't1', a.id))?.internal.outputExpiresAfterS).toBe(7200)
    const byDefault = (await (await create({ input_file_id: id })).json()) as { id: string }
    expect((await getBatch(t.deps.store, 't1', byDefault.id))?.internal.outputExpiresAfterS).toBe(3 * 86_400)
    for (const bad of [
      { anchor: 'created_at', seconds: 10 },
      { anchor: 'created_at', seconds: 2_592_001 },
      { anchor: 'completed_at', seconds: 3600 },
    ]) {
      const res = await create({ input_file_id: id, output_expires_after: bad })
      expect(res.status, JSON.stringify(bad)).toBe(400)
      expect(((await res.json()) as { error: { param: string } }).error.param).toMatch(
        /^output_expires_after/,
      )
    }
  })
})

describe('the enqueued-token limit (PGPT_BATCH_QUEUE_TOKENS)', () => {
  // 'a b c d' is 2 tokens by the 4-characters estimate; with max_tokens 48 a line is 50.
  const costly = (i: number) =>
    JSON.stringify({
      custom_id: `r${i}`,
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'echo-1', prompt: 'a b c d', max_tokens: 48 },
    })
  const uploadLines = (n: number) =>
    uploadBatchFile(Array.from({ length: n }, (_, i) => costly(i)).join('\n'))
  const create = (input_file_id: string, secret = t.keys.admin) =>
    t.app.request('/v1/batches', {
      method: 'POST',
      headers: { ...t.auth(secret), 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id, endpoint: '/v1/completions', completion_window: '24h' }),
    })
  const errorOf = async (r: Response) =>
    ((await r.json()) as { error: { code: string; message: string; type: string } }).error

  it('refuses a batch whose estimate alone passes the limit with a 429 naming both', async () => {
    t = await makeTestEdge({ worker: false, env: { PGPT_BATCH_QUEUE_TOKENS: '120' } })
    const res = await create(await uploadLines(3))
    expect(res.status).toBe(429)
    expect(res.headers.get('retry-after')).not.toBeNull()
    const e = await errorOf(res)
    expect(e.code).toBe('batch_token_limit_exceeded')
    expect(e.message).toContain('about 150 tokens')
    expect(e.message).toContain('limit of 120')
    const listed = await t.app.request('/v1/batches', { headers: t.auth(t.keys.admin) })
    expect(((await listed.json()) as { data: unknown[] }).data).toEqual([]) // nothing was made
  })

  it('refuses the batch that takes the unfinished ones past the limit; an ended batch frees its share', async () => {
    t = await makeTestEdge({ worker: false, env: { PGPT_BATCH_QUEUE_TOKENS: '120' } })
    const file = await uploadLines(2)
    const first = await create(file)
    expect(first.status).toBe(200)
    const a = (await first.json()) as { id: string }
    expect((await getBatch(t.deps.store, 't1', a.id))?.internal.tokenEstimate).toBe(100)

    const second = await create(file)
    expect(second.status).toBe(429)
    const e = await errorOf(second)
    expect(e.code).toBe('batch_token_limit_exceeded')
    expect(e.message).toContain('limit 120 tokens')
    expect(e.message).toContain('hold about 100')
    expect(e.message).toContain('needs about 100')
    // Another tenant has its own queue.
    const t2 = await t.key('t2', ['batch'])
    const f2 = await uploadBatchFile(`${costly(1)}\n${costly(2)}`, {}, t2)
    expect((await create(f2, t2)).status).toBe(200)

    // The first batch completes: its share is free.
    await updateBatch(t.deps.store, 't1', a.id, (b) => ({ ...b, status: 'completed', completed_at: 1 }))
    const third = await create(file)
    expect(third.status).toBe(200)
    const c = (await third.json()) as { id: string }
    expect((await create(file)).status).toBe(429)
    // A batch whose planning job failed (dead-lettered) has ended too, though its record still says validating.
    await t.deps.jobs.transition(c.id, 'failed', { error: { code: 'dead_lettered', message: 'x' } })
    expect((await create(file)).status).toBe(200)
  })

  it('counts the default completion budget: chat without max_tokens takes what fits, up to the context', async () => {
    t = await makeTestEdge({ worker: false })
    const chat = JSON.stringify({
      custom_id: 'c',
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'echo-1', messages: [{ role: 'user', content: 'hi' }], n: 2 },
    })
    const unknown = JSON.stringify({
      custom_id: 'u',
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] },
    })
    const f = await uploadBatchFile(`${chat}\n${unknown}`)
    const res = await t.app.request('/v1/batches', {
      method: 'POST',
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      body: JSON.stringify({
        input_file_id: f,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      }),
    })
    expect(res.status).toBe(200)
    const b = (await res.json()) as { id: string }
    // echo-1 has a 256-token context: the prompt is 1 + 4 (message) + 2 = 7, the completion 249 × n = 2;
    // the unknown model's line fails at validation and counts nothing.
    expect((await getBatch(t.deps.store, 't1', b.id))?.internal.tokenEstimate).toBe(7 + 249 * 2)
  })

  it('holds across racing creations: of several that each fit, the ones past the limit are refused', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-batches-'))
    try {
      const store = new FsObjectStore({ root })
      await store.put(manifestKey('echo-1'), JSON.stringify(manifest('echo-1', null)))
      t = await makeTestEdge({
        worker: false,
        env: { PGPT_BATCH_QUEUE_TOKENS: '250' },
        deps: { store, models: createModelCatalog(store) },
      })
      const file = await uploadLines(1)
      const results = await Promise.all(Array.from({ length: 8 }, () => create(file)))
      expect(results.filter((r) => r.status === 200)).toHaveLength(5)
      expect(results.filter((r) => r.status === 429)).toHaveLength(3)
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })
})
