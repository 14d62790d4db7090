/**
 * GET /v1/usage over the real SQLite usage store: totals equal, token for
 * token, the sum of the `usage` objects the API returned for a mixed workload
 * (plain, streamed with and without include_usage, a client that leaves
 * mid-stream, a cache hit), and tenants do not see each other's usage.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { SqliteUsageStore } from '../../core/adapters/sqlite-usage-store.js'
import { makeTestEdge, type TestEdge } from '../testing/harness.js'

let t: TestEdge
let dir: string
let store: SqliteUsageStore

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-usage-'))
  store = new SqliteUsageStore({ file: join(dir, 'usage.db') })
  t = await makeTestEdge({ deps: { usage: store } })
})
afterEach(async () => {
  await t.close()
  await store.close()
  rmSync(dir, { recursive: true, force: true })
})

const post = (path: string, key: string, body: unknown) =>
  t.app.request(path, {
    method: 'POST',
    headers: { ...t.auth(key), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
const get = (path: string, key: string) => t.app.request(path, { headers: t.auth(key) })

/** Usage of a streamed response: the include_usage chunk, else counted from the stream. */
async function readStream(
  res: Response,
): Promise<{ chunks: number; usage?: { prompt_tokens: number; completion_tokens: number } }> {
  const text = await res.text()
  let chunks = 0
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: {')) continue
    const chunk = JSON.parse(line.slice(6))
    if (chunk.usage) usage = chunk.usage
    if (chunk.choices?.[0]?.delta?.content || chunk.choices?.[0]?.text) chunks++
  }
  return { chunks, ...(usage ? { usage } : {}) }
}

/**
 * Half an hour ago, in epoch seconds: buckets are aligned to it, so with 1h or
 * 1d buckets the first boundary lies in the future and one bucket holds every
 * record of the test.
 */
const since = () => Math.floor(Date.now() / 1000) - 1800

const until = async (fn: () => Promise<boolean>, ms = 5000) => {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await fn()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error('condition not met in time')
}

async function totals(key: string, query = '') {
  const res = await get(`/v1/usage?start_time=${since()}&bucket_width=1d${query}`, key)
  expect(res.status).toBe(200)
  const page = (await res.json()) as {
    data: Array<{
      results: Array<{
        num_model_requests: number
        input_tokens: number
        output_tokens: number
        model: string | null
        api_key_id: string | null
      }>
    }>
  }
  const all = page.data.flatMap((b) => b.results)
  return {
    requests: all.reduce((s, r) => s + r.num_model_requests, 0),
    input: all.reduce((s, r) => s + r.input_tokens, 0),
    output: all.reduce((s, r) => s + r.output_tokens, 0),
    results: all,
  }
}

describe('GET /v1/usage', () => {
  it('sums to exactly the usage the API returned, for a mixed workload', async () => {
    const seen = { prompt: 0, completion: 0, requests: 0 }
    const add = (u: { prompt_tokens: number; completion_tokens: number }) => {
      seen.prompt += u.prompt_tokens
      seen.completion += u.completion_tokens
      seen.requests++
    }
    // 1. plain completion, temperature 0 (cacheable): MISS, then 2. the same request: HIT (counted, cached).
    const body = { model: 'echo-1', prompt: 'one two three four', max_tokens: 3, temperature: 0 }
    const miss = await post('/v1/completions', t.keys.generate, body)
    expect(miss.headers.get('x-cache')).toBe('MISS')
    add(((await miss.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage)
    const hit = await post('/v1/completions', t.keys.generate, body)
    expect(hit.headers.get('x-cache')).toBe('HIT')
    add(((await hit.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage)
    // 3. streamed chat with include_usage: the final chunk carries the usage.
    const withUsage = await readStream(
      await post('/v1/chat/completions', t.keys.generate, {
        model: 'echo-1',
        messages: [{ role: 'user', content: 'a b c d e' }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    )
    expect(withUsage.usage).toBeDefined()
    add(withUsage.usage!)
    // 4. streamed completion without include_usage: the same request non-streamed tells its usage.
    const streamBody = { model: 'echo-1', prompt: 'x y z', max_tokens: 2 }
    const noUsage = await readStream(
      await post('/v1/completions', t.keys.generate, { ...streamBody, stream: true }),
    )
    expect(noUsage.usage).toBeUndefined()
    expect(noUsage.chunks).toBe(2)
    const twin = (await (
      await post('/v1/completions', t.keys.generate, { ...streamBody, seed: 7 })
    ).json()) as { usage: { prompt_tokens: number; completion_tokens: number } }
    expect(twin.usage.completion_tokens).toBe(2)
    add(twin.usage) // the twin itself
    add(twin.usage) // the stream, which had the same prompt and length
    const before = (await totals(t.keys.admin)).requests
    expect(before).toBe(seen.requests)

    const got = await totals(t.keys.generate)
    expect(got).toMatchObject({ requests: seen.requests, input: seen.prompt, output: seen.completion })
  })

  it('meters a stream the client abandons', async () => {
    await t.close()
    t = await makeTestEdge({ deps: { usage: store }, tokenDelayMs: 20 })
    const res = await post('/v1/chat/completions', t.keys.generate, {
      model: 'echo-1',
      messages: [{ role: 'user', content: 'a b c d e f g h' }],
      stream: true,
    })
    const reader = res.body!.getReader()
    await reader.read()
    await reader.cancel()
    await until(async () => (await totals(t.keys.generate)).requests === 1)
    expect((await totals(t.keys.generate)).output).toBe(8)
  })

  it('groups by model and by key, and exports CSV', async () => {
    await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'a b', max_tokens: 2 })
    await post('/v1/completions', t.keys.admin, { model: 'echo-1', prompt: 'c d e', max_tokens: 3 })
    const byKey = await totals(t.keys.admin, '&group_by=api_key')
    expect(byKey.results).toHaveLength(2)
    expect(new Set(byKey.results.map((r) => r.api_key_id)).size).toBe(2)
    const byModel = await totals(t.keys.admin, '&group_by=model')
    expect(byModel.results.map((r) => r.model)).toEqual(['echo-1'])
    expect(byModel.output).toBe(5)

    const csv = await get(
      `/v1/usage?start_time=${since()}&bucket_width=1h&group_by=model&format=csv`,
      t.keys.generate,
    )
    expect(csv.headers.get('content-type')).toContain('text/csv')
    const lines = (await csv.text()).trim().split('\r\n')
    expect(lines[0]).toBe('start_time,end_time,model,requests,input_tokens,output_tokens,trained_tokens')
    expect(lines).toHaveLength(2)
    expect(lines[1]).toMatch(/^\d+,\d+,echo-1,2,\d+,5,0$/)
  })

  it('keeps tenants apart; only an admin reads another tenant', async () => {
    await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'a b', max_tokens: 2 })
    const t2 = await t.key('t2', ['generate'])
    expect((await totals(t2)).requests).toBe(0) // t2's own usage: none
    expect((await totals(t.keys.other)).requests).toBe(1) // t2's admin key: every tenant
    expect((await totals(t.keys.generate)).requests).toBe(1)
    const denied = await get(`/v1/usage?start_time=${since()}&tenant=t1`, t.keys.generate.replace(/.$/, 'x'))
    expect(denied.status).toBe(401)
    // t2's admin key may name t1: admins see every tenant.
    expect((await totals(t.keys.other, '&tenant=t1')).requests).toBe(1)
    // A non-admin key naming another tenant is refused.
    const t1only = await t.key('t1', ['generate'])
    const res = await get(`/v1/usage?start_time=${since()}&tenant=t2`, t1only)
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe('permission_error')
  })

  it('rejects a bad range with a 400 naming the parameter', async () => {
    const res = await get('/v1/usage?start_time=100&end_time=50', t.keys.generate)
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe('end_time')
    const tooMany = await get('/v1/usage?start_time=0&end_time=100000000&bucket_width=1m', t.keys.generate)
    expect(tooMany.status).toBe(400)
    const bad = await get(`/v1/usage?start_time=${since()}&bucket_width=2w`, t.keys.generate)
    expect(bad.status).toBe(400)
  })
})

describe('GET /v1/webhooks/default/secret', () => {
  it("returns the tenant's secret when the edge knows the signing key, else 503", async () => {
    const none = await get('/v1/webhooks/default/secret', t.keys.generate)
    expect(none.status).toBe(503)
    await t.close()
    t = await makeTestEdge({ deps: { webhookSecret: async (tenant) => `whsec_${tenant}` } })
    const res = await get('/v1/webhooks/default/secret', t.keys.generate)
    expect(await res.json()).toEqual({ object: 'webhook_secret', key: 'whsec_t1' })
    expect(await (await get('/v1/webhooks/default/secret', t.keys.other)).json()).toMatchObject({
      key: 'whsec_t2',
    })
  })
})
