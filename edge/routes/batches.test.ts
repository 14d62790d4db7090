/**
 * A batch whose planning job fails before the batch moves on (a crash loop
 * that dead-letters it, say) ends `failed` with the job's reason instead of
 * staying `validating`: nothing accepted is left hanging.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { getBatch } from '../../core/records/batches.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'

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

describe('POST /v1/batches and expiry', () => {
  const uploadInput = async (fields: Record<string, string> = {}) => {
    const form = new FormData()
    form.set('purpose', 'batch')
    form.set('file', new Blob([`${line(1)}\n`], { type: 'application/jsonl' }), 'in.jsonl')
    for (const [k, v] of Object.entries(fields)) form.set(k, v)
    const res = await t.app.request('/v1/files', {
      method: 'POST',
      headers: t.auth(t.keys.admin),
      body: form,
    })
    expect(res.status).toBe(200)
    return ((await res.json()) as { id: string }).id
  }
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
