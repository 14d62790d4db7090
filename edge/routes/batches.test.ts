/**
 * A batch whose planning job fails before the batch moves on (a crash loop
 * that dead-letters it, say) ends `failed` with the job's reason instead of
 * staying `validating`: nothing accepted is left hanging.
 */
import { afterEach, describe, expect, it } from 'vitest'
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
    // Another tenant still cannot see it.
    const other = await t.app.request(`/v1/batches/${batch.id}`, { headers: t.auth(t.keys.other) })
    expect(other.status).toBe(404)
  })
})
