import { afterEach, describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../core/adapters/memory-object-store.js'
import { type ModelManifest, manifestKey, markModelsChanged } from '../core/model-manifest.js'
import type { JobEvent } from '../core/ports/events.js'
import type { ObjectStore } from '../core/ports/object-store.js'
import { createModelCatalog } from '../core/records/model-catalog.js'
import {
  INTERNAL_TOKEN,
  makeTestEdge,
  manifest,
  type TestEdge,
  type TestEdgeOptions,
} from '../test/helpers/edge-harness.js'
import { sha256Hex } from './keys.js'

let t: TestEdge
const edges: TestEdge[] = []
async function edge(o: TestEdgeOptions = {}) {
  t = await makeTestEdge(o)
  edges.push(t)
  return t
}
afterEach(async () => {
  for (const e of edges.splice(0)) await e.close()
})

const post = (path: string, secret: string, body: unknown, headers: Record<string, string> = {}) =>
  t.app.request(path, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
const get = (path: string, secret?: string, headers: Record<string, string> = {}) =>
  t.app.request(path, { headers: { ...(secret ? { authorization: `Bearer ${secret}` } : {}), ...headers } })

async function expectError(res: Response, status: number, code: string | null, param?: string | null) {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toContain('application/json')
  const body = (await res.json()) as {
    error: { message: string; type: string; param: string | null; code: string | null }
  }
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type'])
  expect(body.error.message.length).toBeGreaterThan(5)
  expect(body.error.code).toEqual(code)
  if (param !== undefined) expect(body.error.param).toBe(param)
  return body.error
}

/** What a publisher in another process does: the manifest, then the generation marker. */
async function publishManifest(store: ObjectStore, m: ModelManifest) {
  await store.put(manifestKey(m.id), JSON.stringify(m))
  await markModelsChanged(store)
}

const until = async (fn: () => Promise<boolean>, ms = 3000) => {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await fn()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error('condition not met in time')
}

describe('system routes', () => {
  it('answers /health, /ready, /openapi.json and /docs without a key', async () => {
    await edge({ env: { PGPT_DEFAULT_MODEL: 'echo-1' } })
    expect(await (await get('/health')).json()).toEqual({ status: 'ok' })
    const ready = await get('/ready')
    expect(ready.status).toBe(200)
    expect(((await ready.json()) as { checks: Record<string, string> }).checks).toEqual({
      queue: 'ok',
      store: 'ok',
      jobs: 'ok',
      keys: 'ok',
      model: 'ok',
    })
    const spec = (await (await get('/openapi.json')).json()) as {
      openapi: string
      paths: Record<string, Record<string, { requestBody?: unknown }>>
      components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> }
    }
    expect(spec.openapi).toBe('3.1.0')
    for (const p of [
      '/v1/models',
      '/v1/models/{id}',
      '/v1/completions',
      '/v1/chat/completions',
      '/v1/jobs',
      '/v1/jobs/{id}',
      '/v1/jobs/{id}/cancel',
      '/v1/jobs/{id}/stream',
      '/v1/admin/keys',
      '/health',
      '/ready',
    ])
      expect(spec.paths).toHaveProperty([p])
    expect(spec.paths).not.toHaveProperty(['/internal/events'])
    expect(spec.components.schemas).toHaveProperty('ChatCompletionRequest')
    expect(spec.components.securitySchemes).toHaveProperty('bearerAuth')
    const docs = await get('/docs')
    expect(docs.headers.get('content-type')).toContain('text/html')
    const html = await docs.text()
    expect(html).toContain('/openapi.json')
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=/)
  })

  type NotReady = {
    status: string
    checks: Record<string, string>
    error: { message: string; type: string; param: null; code: string }
  }

  it('is not ready until the default model is published, and ready on the next request after', async () => {
    // The local profile's default model, prometheus-mini, is not among the harness' models.
    await edge()
    expect(t.deps.config.PGPT_DEFAULT_MODEL).toBe('prometheus-mini')
    expect((await get('/health')).status).toBe(200)
    const before = await get('/ready')
    expect(before.status).toBe(503)
    const body = (await before.json()) as NotReady
    expect(body.status).toBe('not_ready')
    expect(body.error).toMatchObject({ type: 'service_unavailable', param: null, code: 'not_ready' })
    expect(body.error.message).toContain("'prometheus-mini'")
    expect(body.error.message).toContain('PGPT_DEFAULT_MODEL')
    // Unauthenticated: a tenant's private model is not named.
    expect(JSON.stringify(body)).not.toContain('private-t2')
    expect(body.checks).toMatchObject({ queue: 'ok', store: 'ok' })
    expect(body.checks.model).toMatch(/^error: /)
    await publishManifest(t.deps.store, manifest('prometheus-mini', null))
    expect((await get('/ready')).status).toBe(200)
  })

  it('with no default model, is ready once any model is published', async () => {
    const store = new MemoryObjectStore()
    await edge({
      env: { PGPT_PROFILE: 'onprem' },
      deps: { store, models: createModelCatalog(store) },
    })
    expect(t.deps.config.PGPT_DEFAULT_MODEL).toBeUndefined()
    const before = await get('/ready')
    expect(before.status).toBe(503)
    expect(((await before.json()) as NotReady).error.message).toMatch(/no model is published/)
    // A tenant's own model counts: a deployment may serve only those.
    await publishManifest(store, manifest('team-model', 'acme'))
    expect((await get('/ready')).status).toBe(200)
  })

  it('reports not ready when a dependency fails, without the adapter internals', async () => {
    await edge({ env: { PGPT_DEFAULT_MODEL: 'echo-1' } })
    t.deps.queue.stats = async () => {
      throw new Error('local-queue: cannot open /srv/secret/pgpt.db: SQLITE_CANTOPEN')
    }
    const res = await get('/ready')
    expect(res.status).toBe(503)
    const text = await res.text()
    expect(text).not.toContain('/srv/secret')
    const body = JSON.parse(text) as NotReady
    const requestId = res.headers.get('x-request-id')!
    expect(body.checks.queue).toBe(`error: unavailable (the edge's log has why: request id ${requestId})`)
    expect(body.checks.model).toBe('ok')
    expect(body.error.message).toBe(
      `Not ready: queue: unavailable (the edge's log has why: request id ${requestId}).`,
    )
  })

  it('serves /metrics, behind a bearer token when PGPT_METRICS_TOKEN is set', async () => {
    await edge({ env: { PGPT_METRICS_TOKEN: 'metrics-secret' } })
    await get('/v1/models', t.keys.generate)
    await expectError(await get('/metrics'), 401, 'invalid_metrics_token')
    const res = await get('/metrics', 'metrics-secret')
    expect(res.status).toBe(200)
    const text = await res.text()
    expect(text).toMatch(
      /pgpt:http_requests_total\{route="\/v1\/models",method="GET",status="200",model=""\} 1/,
    )
    expect(text).toContain('pgpt:http_request_duration_seconds_bucket')
  })
})

describe('request ids', () => {
  it('echoes a safe x-request-id, replaces an unsafe one, and stores it on the job and queue message', async () => {
    await edge({ worker: false })
    expect(
      (await get('/health', undefined, { 'x-request-id': 'abc-123:x.y_z' })).headers.get('x-request-id'),
    ).toBe('abc-123:x.y_z')
    const replaced = (await get('/health', undefined, { 'x-request-id': 'bad id <script>' })).headers.get(
      'x-request-id',
    )
    expect(replaced).toMatch(/^req_[0-9a-z]+$/)
    expect((await get('/nope')).headers.get('x-request-id')).toMatch(/^req_/)
    const res = await post(
      '/v1/jobs',
      t.keys.generate,
      { model: 'echo-1', input: { prompt: 'hi' } },
      { 'x-request-id': 'trace-42' },
    )
    expect(res.status).toBe(201)
    const job = (await res.json()) as { id: string; request_id: string }
    expect(job.request_id).toBe('trace-42')
    expect((await t.deps.jobs.getById(job.id))?.requestId).toBe('trace-42')
    const [msg] = await t.deps.queue.receive()
    expect(JSON.parse(msg!.body)).toEqual({ jobId: job.id, kind: 'generation', requestId: 'trace-42' })
  })
})

describe('authentication and scopes', () => {
  it('401 without a key, with a bad key and with a revoked key', async () => {
    await edge()
    const missing = await get('/v1/models', undefined, { 'x-request-id': 'who-am-i' })
    expect(missing.headers.get('x-request-id')).toBe('who-am-i')
    expect(missing.headers.get('x-ratelimit-limit-requests')).toBeNull()
    await expectError(missing, 401, 'missing_api_key')
    await expectError(await get('/v1/models', 'pgpt_wrongwrongwrongwrongwrong'), 401, 'invalid_api_key')
    await expectError(await get('/v1/models', 'not-even-a-key'), 401, 'invalid_api_key')
    const rec = await t.deps.keys.findByHash(await sha256Hex(t.keys.generate))
    await t.deps.keys.revoke(rec!.id, Date.now())
    await expectError(await get('/v1/models', t.keys.generate), 401, 'invalid_api_key')
  })

  it.each([
    ['batchOnly', '/v1/chat/completions', { model: 'echo-1', messages: [{ role: 'user', content: 'x' }] }],
    ['batchOnly', '/v1/completions', { model: 'echo-1', prompt: 'x' }],
    ['generate', '/v1/admin/keys', { name: 'n', scopes: ['generate'] }],
  ] as const)('403 when the %s key calls %s', async (which, path, body) => {
    await edge()
    const err = await expectError(await post(path, t.keys[which], body), 403, 'insufficient_scope')
    expect(err.type).toBe('permission_error')
  })
})

describe('validation and limits', () => {
  it.each([
    [{ model: 'echo-1', messages: [{ role: 'user', content: 'x' }], temperature: 5 }, 'temperature'],
    [{ model: 'echo-1', messages: [] }, 'messages'],
    [{ model: 'echo-1', messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
    [{ messages: [{ role: 'user', content: 'x' }] }, 'model'],
    [{ model: 'echo-1', messages: [{ role: 'user', content: 'x' }], n: 17 }, 'n'],
    [{ model: 'echo-1', messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }, 'max_tokens'],
    [
      { model: 'echo-1', messages: [{ role: 'user', content: 'x' }], stop: ['a', 'b', 'c', 'd', 'e'] },
      'stop',
    ],
  ])('400 names the param for %j', async (body, param) => {
    await edge()
    const err = await expectError(
      await post('/v1/chat/completions', t.keys.generate, body),
      400,
      expect.any(String) as never,
      param,
    )
    expect(err.type).toBe('invalid_request_error')
  })

  it('400 for malformed JSON, not a 5xx', async () => {
    await edge()
    await expectError(
      await post('/v1/chat/completions', t.keys.generate, '{"model": "echo-1", '),
      400,
      'invalid_json',
    )
  })

  it('400 for an empty or null body', async () => {
    await edge()
    await expectError(await post('/v1/chat/completions', t.keys.generate, ''), 400, 'invalid_json')
    await expectError(await post('/v1/chat/completions', t.keys.generate, 'null'), 400, 'invalid_value', null)
  })

  it('names a missing field as missing and a wrong one as invalid', async () => {
    await edge()
    await expectError(
      await post('/v1/completions', t.keys.generate, { prompt: 'x' }),
      400,
      'missing_required_parameter',
      'model',
    )
    await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'x', n: 1.5 }),
      400,
      'invalid_value',
      'n',
    )
  })

  it('415 for a body that is not JSON', async () => {
    await edge()
    const res = await t.app.request('/v1/completions', {
      method: 'POST',
      headers: { ...t.auth(t.keys.generate), 'content-type': 'text/plain' },
      body: JSON.stringify({ model: 'echo-1', prompt: 'x' }),
    })
    await expectError(res, 415, 'unsupported_media_type')
  })

  it('400 context_length_exceeded when prompt + max_tokens exceed the context', async () => {
    await edge()
    const long = 'word '.repeat(40) // 200 chars ≈ 50 tokens > 32
    const a = await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'tiny', prompt: long }),
      400,
      'context_length_exceeded',
      'prompt',
    )
    expect(a.message).toContain('32 tokens')
    await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'tiny', prompt: 'short', max_tokens: 31 }),
      400,
      'context_length_exceeded',
      'max_tokens',
    )
    expect(
      (await post('/v1/completions', t.keys.generate, { model: 'tiny', prompt: 'short', max_tokens: 30 }))
        .status,
    ).toBe(200)
  })

  it('413 for a body over PGPT_MAX_BODY_BYTES', async () => {
    await edge({ env: { PGPT_MAX_BODY_BYTES: '2048' } })
    const err = await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'x'.repeat(4096) }),
      413,
      'payload_too_large',
    )
    expect(err.message).toContain('2048')
  })

  it('404 for an unknown route, an unknown model and another tenant’s model', async () => {
    await edge()
    await expectError(await get('/v1/nothing-here', t.keys.generate), 404, 'unknown_url')
    await expectError(await get('/nothing'), 404, 'unknown_url')
    await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'nope', prompt: 'x' }),
      404,
      'model_not_found',
      'model',
    )
    await expectError(await get('/v1/models/private-t2', t.keys.generate), 404, 'model_not_found')
    expect((await get('/v1/models/private-t2', t.keys.other)).status).toBe(200)
    const ids = (
      (await (await get('/v1/models', t.keys.generate)).json()) as { data: { id: string }[] }
    ).data.map((m) => m.id)
    expect(ids).toEqual(['echo-1', 'tiny'])
  })

  it('422 for a webhook to a private address', async () => {
    await edge()
    const err = await expectError(
      await post('/v1/jobs', t.keys.generate, {
        model: 'echo-1',
        input: { prompt: 'x' },
        webhook: 'http://127.0.0.1:9/hook',
      }),
      422,
      'webhook_url_not_allowed',
      'webhook',
    )
    expect(err.message).toContain('private')
    // The refusal says what to change.
    expect(err.message).toContain('PGPT_WEBHOOK_ALLOW_PRIVATE=true')
  })

  it('accepts a webhook to a loopback receiver in the local profile by default', async () => {
    // An empty variable counts as unset: the local profile's default applies.
    await edge({ env: { PGPT_WEBHOOK_ALLOW_PRIVATE: '' } })
    expect(t.deps.config.PGPT_PROFILE).toBe('local')
    const res = await post('/v1/jobs', t.keys.generate, {
      model: 'echo-1',
      input: { prompt: 'x' },
      webhook: 'http://127.0.0.1:9/hook',
    })
    expect(res.status).toBe(201)
  })
})

describe('rate limits', () => {
  it('429 with Retry-After and x-ratelimit headers once the requests per minute are spent', async () => {
    await edge()
    const secret = await t.key('t1', ['generate'], { requestsPerMinute: 2 })
    const a = await get('/v1/models', secret)
    expect(a.headers.get('x-ratelimit-limit-requests')).toBe('2')
    expect(a.headers.get('x-ratelimit-remaining-requests')).toBe('1')
    expect(a.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(ms|(\.\d+)?s)$/)
    expect(a.headers.get('x-ratelimit-limit-tokens')).toBe('1000000')
    expect(a.headers.get('x-ratelimit-remaining-tokens')).toBe('1000000')
    expect(a.headers.get('x-ratelimit-reset-tokens')).toBeTruthy()
    expect((await get('/v1/models', secret)).headers.get('x-ratelimit-remaining-requests')).toBe('0')
    const denied = await get('/v1/models', secret)
    const err = await expectError(denied, 429, 'rate_limit_exceeded')
    expect(err.type).toBe('rate_limit_error')
    const retry = Number(denied.headers.get('retry-after'))
    expect(retry).toBeGreaterThanOrEqual(29)
    expect(retry).toBeLessThanOrEqual(30)
    expect(denied.headers.get('x-ratelimit-remaining-requests')).toBe('0')
    expect(await (await t.app.request('/metrics')).text()).toMatch(
      /pgpt:rate_limit_rejections_total\{limit="requests"\} 1/,
    )
  })

  it('429 on tokens per minute, counting prompt + max_tokens', async () => {
    await edge()
    const secret = await t.key('t1', ['generate'], { tokensPerMinute: 100 })
    const big = await post('/v1/completions', secret, { model: 'echo-1', prompt: 'a b', max_tokens: 150 })
    await expectError(big, 429, 'tokens_exceeded')
    const ok = await post('/v1/completions', secret, { model: 'echo-1', prompt: 'a b c', max_tokens: 60 })
    expect(ok.status).toBe(200)
    // 2 prompt + 60 reserved while it ran.
    expect(Number(ok.headers.get('x-ratelimit-remaining-tokens'))).toBe(100 - 62)
    // 5 were used (2 prompt + 3 generated): 57 came back, so 95 are left (plus a trickle of refill).
    const next = await post('/v1/completions', secret, { model: 'echo-1', prompt: 'a b c', max_tokens: 97 })
    await expectError(next, 429, 'rate_limit_exceeded')
    expect(Number(next.headers.get('retry-after'))).toBeGreaterThan(0)
    const fits = await post('/v1/completions', secret, { model: 'echo-1', prompt: 'a b c', max_tokens: 92 })
    expect(fits.status).toBe(200)
    expect(next.headers.get('x-ratelimit-limit-tokens')).toBe('100')
  })

  it('is exact under concurrent requests on one instance', async () => {
    await edge()
    const secret = await t.key('t1', ['generate'], { requestsPerMinute: 10 })
    const all = await Promise.all(Array.from({ length: 40 }, () => get('/v1/models', secret)))
    expect(all.filter((r) => r.status === 200)).toHaveLength(10)
    expect(all.filter((r) => r.status === 429)).toHaveLength(30)
  })
})

describe('generation', () => {
  it('answers a chat completion through a job, with usage recorded', async () => {
    await edge()
    const res = await post('/v1/chat/completions', t.keys.generate, {
      model: 'echo-1',
      messages: [
        { role: 'system', content: 'ignored' },
        { role: 'user', content: 'one two three four' },
      ],
      max_tokens: 3,
    })
    expect(res.status).toBe(200)
    expect(Number(res.headers.get('openai-processing-ms'))).toBeGreaterThanOrEqual(0)
    expect(res.headers.get('x-cache')).toBe('BYPASS')
    const body = (await res.json()) as {
      id: string
      choices: { message: { content: string }; finish_reason: string }[]
    }
    expect(body.choices[0]!.message.content).toBe('four three two')
    expect(body.choices[0]!.finish_reason).toBe('length')
    const job = await t.deps.jobs.getById(body.id.replace('chatcmpl-', ''))
    expect(job?.state).toBe('succeeded')
    expect(job?.tenant).toBe('t1')
    expect(t.usage.records).toHaveLength(1)
    expect(t.usage.records[0]).toMatchObject({
      tenant: 't1',
      model: 'echo-1',
      kind: 'chat.completion',
      completionTokens: 3,
      cached: false,
    })
  })

  it('maps sampling parameters into the job input', async () => {
    await edge()
    const res = await post('/v1/completions', t.keys.generate, {
      model: 'echo-1',
      prompt: 'a b c d e',
      max_tokens: 10,
      temperature: 0.5,
      top_p: 0.9,
      top_k: 40,
      n: 2,
      stop: 'b',
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      repetition_penalty: 1.2,
      seed: 7,
      logprobs: 2,
      echo: true,
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as {
      id: string
      choices: { text: string; index: number; logprobs: { tokens: string[] } }[]
    }
    expect(body.choices.map((c) => c.index)).toEqual([0, 1])
    expect(body.choices[0]!.text).toBe('a b c d ee d c ')
    expect(body.choices[0]!.logprobs.tokens).toEqual(['e', ' d', ' c', ' '])
    const job = await t.deps.jobs.getById(body.id.replace('cmpl-', ''))
    expect((job!.input as { sampling: unknown }).sampling).toEqual({
      maxTokens: 10,
      temperature: 0.5,
      topP: 0.9,
      topK: 40,
      presencePenalty: 0.5,
      frequencyPenalty: -0.5,
      repetitionPenalty: 1.2,
      seed: 7,
      stop: ['b'],
      n: 2,
      logprobs: 2,
    })
  })

  it('turns a failed job into a 500 in OpenAI’s shape', async () => {
    await edge()
    const err = await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'x __fail__' }),
      500,
      'echo_failure',
    )
    expect(err.type).toBe('server_error')
    expect(t.usage.records).toHaveLength(0)
  })

  it('times out with 504 when no worker answers', async () => {
    await edge({ worker: false, deps: { syncTimeoutMs: 200 } })
    await expectError(
      await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'x' }),
      504,
      'timeout',
    )
  })
})

describe('response cache', () => {
  const body = { model: 'echo-1', messages: [{ role: 'user', content: 'cache me please' }], temperature: 0 }

  it('MISS then HIT for a repeatable request, usage marked cached; keyed per tenant', async () => {
    await edge()
    const a = await post('/v1/chat/completions', t.keys.generate, body)
    expect(a.headers.get('x-cache')).toBe('MISS')
    const b = await post('/v1/chat/completions', t.keys.admin, body)
    expect(b.headers.get('x-cache')).toBe('HIT')
    expect(await b.text()).toBe(await a.text())
    expect(b.headers.get('x-ratelimit-remaining-requests')).toBeTruthy()
    expect(t.usage.records.map((r) => r.cached)).toEqual([false, true])
    // Another tenant never sees t1's entry.
    expect((await post('/v1/chat/completions', t.keys.other, body)).headers.get('x-cache')).toBe('MISS')
    // A different parameter is a different entry.
    expect(
      (await post('/v1/chat/completions', t.keys.generate, { ...body, max_tokens: 2 })).headers.get(
        'x-cache',
      ),
    ).toBe('MISS')
    const text = await (await t.app.request('/metrics')).text()
    expect(text).toMatch(/pgpt:response_cache_lookups_total\{result="hit"\} 1/)
    expect(text).toMatch(/pgpt:response_cache_lookups_total\{result="miss"\} 3/)
  })

  it.each([[{ 'cache-control': 'no-cache' }], [{ 'x-pgpt-cache': 'bypass' }]])(
    'BYPASS with %j',
    async (headers) => {
      await edge()
      await post('/v1/chat/completions', t.keys.generate, body)
      const res = await post('/v1/chat/completions', t.keys.generate, body, headers)
      expect(res.headers.get('x-cache')).toBe('BYPASS')
      expect(res.status).toBe(200)
    },
  )

  it('caches a fixed seed, not sampling without one, and never errors', async () => {
    await edge()
    const seeded = { ...body, temperature: 1, seed: 3 }
    expect((await post('/v1/chat/completions', t.keys.generate, seeded)).headers.get('x-cache')).toBe('MISS')
    expect((await post('/v1/chat/completions', t.keys.generate, seeded)).headers.get('x-cache')).toBe('HIT')
    const sampled = { ...body, temperature: 1 }
    expect((await post('/v1/chat/completions', t.keys.generate, sampled)).headers.get('x-cache')).toBe(
      'BYPASS',
    )
    const failing = { model: 'echo-1', prompt: '__fail__', temperature: 0 }
    expect((await post('/v1/completions', t.keys.generate, failing)).status).toBe(500)
    const again = await post('/v1/completions', t.keys.generate, failing)
    expect(again.status).toBe(500)
    expect(again.headers.get('x-cache')).toBe('MISS')
  })
})

describe('streaming', () => {
  it('cancels the job of a client that leaves mid-stream, and records the usage of what it generated', async () => {
    await edge({ tokenDelayMs: 20 })
    const res = await post('/v1/chat/completions', t.keys.generate, {
      model: 'echo-1',
      messages: [{ role: 'user', content: Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ') }],
      stream: true,
    })
    expect(res.headers.get('content-type')).toContain('text/event-stream')
    const reader = res.body!.getReader()
    await reader.read() // the role chunk
    await reader.read() // the first token
    await reader.cancel()
    await until(async () => t.usage.records.length === 1)
    const job = (await t.deps.jobs.getById(res.headers.get('x-pgpt-job-id')!))!
    expect(job.state).toBe('canceled')
    const generated = (job.output as { usage: { completionTokens: number } }).usage.completionTokens
    expect(generated).toBeGreaterThan(0)
    expect(generated).toBeLessThan(30)
    expect(t.usage.records[0]).toMatchObject({
      completionTokens: generated,
      kind: 'chat.completion',
      cached: false,
    })
    expect(await (await t.app.request('/metrics')).text()).toMatch(
      /pgpt:time_to_first_token_seconds_count\{model="echo-1"\} 1/,
    )
  })

  it('a job run again mid-stream: the client gets each piece of text once, or an error if the rerun differs', async () => {
    await edge({ worker: false })
    const relayed = async (run2: string[]) => {
      const res = await post('/v1/completions', t.keys.generate, {
        model: 'echo-1',
        prompt: 'p',
        stream: true,
      })
      const jobId = res.headers.get('x-pgpt-job-id')!
      const publish = (run: number, seq: number, type: JobEvent['type'], data: unknown) =>
        t.deps.events.publish({ jobId, run, seq, type, data, at: Date.now() })
      const token = (text: string) => ({ index: 0, text })
      await publish(1, 1, 'start', { attempt: 1 })
      await publish(1, 2, 'token', token('Once'))
      await publish(1, 3, 'token', token(' upon'))
      // Run 1's worker was lost; run 2 starts over from seq 1.
      await publish(2, 1, 'start', { attempt: 2 })
      for (const [i, text] of run2.entries()) await publish(2, i + 2, 'token', token(text))
      const output = {
        model: 'echo-1',
        choices: [{ index: 0, text: run2.join(''), finishReason: 'length', logprobs: null }],
        usage: { promptTokens: 1, completionTokens: run2.length },
      }
      await publish(2, run2.length + 2, 'completed', output)
      const data = [...(await res.text()).matchAll(/^data: (.*)$/gm)].map((m) => m[1])
      const texts = data
        .filter((d) => d.startsWith('{"id"'))
        .map((d) => (JSON.parse(d) as { choices: Array<{ text: string }> }).choices[0]?.text ?? '')
      return { jobId, data, texts }
    }
    const same = await relayed(['Once', ' upon', ' a', ' time'])
    expect(same.texts.join('')).toBe('Once upon a time')
    expect(same.data.at(-1)).toBe('[DONE]')

    const differs = await relayed(['Once', ' there', ' was'])
    expect(differs.texts.join('')).toBe('Once upon')
    expect(differs.data).not.toContain('[DONE]')
    expect(JSON.parse(differs.data.at(-1)!)).toMatchObject({ error: { code: 'job_rerun_diverged' } })
    // Nobody reads the rest of a job whose stream ended so: it is canceled.
    await until(async () => (await t.deps.jobs.getById(differs.jobId))?.state === 'canceled')
  })

  it('ends a stream with an error object when the job fails', async () => {
    await edge()
    const res = await post('/v1/completions', t.keys.generate, {
      model: 'echo-1',
      prompt: '__fail__',
      stream: true,
    })
    const text = await res.text()
    expect(text).toContain('"code":"echo_failure"')
    expect(text).not.toContain('[DONE]')
  })
})

describe('jobs', () => {
  type Job = {
    id: string
    status: string
    output: { choices: { text: string }[] } | null
    webhook: string | null
    webhook_events_filter: string[] | null
    metadata: Record<string, string> | null
  }

  it('Prefer: wait=N returns the finished job; webhook and metadata are stored', async () => {
    await edge({ env: { PGPT_PROFILE: 'local', PGPT_WEBHOOK_ALLOW_PRIVATE: 'true' } })
    const res = await post(
      '/v1/jobs',
      t.keys.generate,
      {
        model: 'echo-1',
        input: { messages: [{ role: 'user', content: 'x y' }] },
        webhook: 'http://127.0.0.1:9999/hook',
        webhook_events_filter: ['completed'],
        metadata: { run: '7' },
      },
      { prefer: 'wait=5' },
    )
    expect(res.status).toBe(201)
    expect(res.headers.get('preference-applied')).toBe('wait=5')
    const job = (await res.json()) as Job
    expect(job.status).toBe('succeeded')
    expect(job.output!.choices[0]!.text).toBe('y x')
    expect(job.webhook).toBe('http://127.0.0.1:9999/hook')
    expect(job.webhook_events_filter).toEqual(['completed'])
    expect(job.metadata).toEqual({ run: '7' })
    expect((await t.deps.jobs.getById(job.id))?.webhook).toEqual({
      url: 'http://127.0.0.1:9999/hook',
      eventsFilter: ['completed'],
    })
    await until(async () => t.usage.records.length === 1)
  })

  it('without Prefer returns at once; GET follows it; another tenant gets 404', async () => {
    await edge({ worker: false })
    const job = (await (
      await post('/v1/jobs', t.keys.generate, { model: 'echo-1', input: { prompt: 'p' } })
    ).json()) as Job
    expect(job.status).toBe('queued')
    expect(((await (await get(`/v1/jobs/${job.id}`, t.keys.admin)).json()) as Job).id).toBe(job.id)
    await expectError(await get(`/v1/jobs/${job.id}`, t.keys.other), 404, 'job_not_found')
    await expectError(await post(`/v1/jobs/${job.id}/cancel`, t.keys.other, {}), 404, 'job_not_found')
    await expectError(await get(`/v1/jobs/${job.id}/stream`, t.keys.other), 404, 'job_not_found')
  })

  it('lists with cursor pagination, newest first, per tenant', async () => {
    await edge({ worker: false })
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      ids.push(
        (
          (await (
            await post('/v1/jobs', t.keys.generate, { model: 'echo-1', input: { prompt: `p${i}` } })
          ).json()) as Job
        ).id,
      )
      await new Promise((r) => setTimeout(r, 2))
    }
    await post('/v1/jobs', t.keys.other, { model: 'echo-1', input: { prompt: 'theirs' } })
    type Page = { data: Job[]; has_more: boolean; last_id: string }
    const p1 = (await (await get('/v1/jobs?limit=2', t.keys.generate)).json()) as Page
    expect(p1.data.map((j) => j.id)).toEqual([ids[4], ids[3]])
    expect(p1.has_more).toBe(true)
    const p2 = (await (await get(`/v1/jobs?limit=2&after=${p1.last_id}`, t.keys.generate)).json()) as Page
    expect(p2.data.map((j) => j.id)).toEqual([ids[2], ids[1]])
    const p3 = (await (await get(`/v1/jobs?limit=2&after=${p2.last_id}`, t.keys.generate)).json()) as Page
    expect(p3.data.map((j) => j.id)).toEqual([ids[0]])
    expect(p3.has_more).toBe(false)
    await expectError(await get('/v1/jobs?limit=1000', t.keys.generate), 400, 'invalid_value', 'limit')
  })

  it('cancels a queued job and ends its event stream', async () => {
    await edge({ worker: false })
    const job = (await (
      await post('/v1/jobs', t.keys.generate, { model: 'echo-1', input: { prompt: 'p' } })
    ).json()) as Job
    const stream = get(`/v1/jobs/${job.id}/stream`, t.keys.generate)
    const canceled = (await (await post(`/v1/jobs/${job.id}/cancel`, t.keys.generate, {})).json()) as Job
    expect(canceled.status).toBe('canceled')
    const text = await (await stream).text()
    expect(text).toContain('event: canceled')
  })

  it('streams a job’s events as SSE and resumes after Last-Event-ID', async () => {
    await edge({ tokenDelayMs: 5 })
    const job = (await (
      await post('/v1/jobs', t.keys.generate, { model: 'echo-1', input: { prompt: 'a b c' } })
    ).json()) as Job
    const text = await (await get(`/v1/jobs/${job.id}/stream`, t.keys.generate)).text()
    const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\nid: ([\d-]+)/g)].map((m) => [m[1], m[3]])
    expect(events.map((e) => e[0])).toEqual(['start', 'token', 'token', 'token', 'completed'])
    expect(events.map((e) => e[1])).toEqual(['1-1', '1-2', '1-3', '1-4', '1-5'])
    // `<run>-<seq>`, or a plain seq as ids were before runs (run 1's).
    for (const id of ['1-3', '3']) {
      const resumed = await (
        await get(`/v1/jobs/${job.id}/stream`, t.keys.generate, { 'last-event-id': id })
      ).text()
      expect([...resumed.matchAll(/event: (\w+)/g)].map((m) => m[1])).toEqual(['token', 'completed'])
    }
    // Finished and asked afresh: one terminal event from the record.
    const after = await (await get(`/v1/jobs/${job.id}/stream`, t.keys.generate)).text()
    expect(after).toContain('event: completed')
    expect(after).toContain('"text":"c b a"')
  })
})

describe('job event stream across runs', () => {
  it('a job run again streams its new run; Last-Event-ID of the old run resumes into the new one', async () => {
    await edge({ worker: false })
    const job = (await (
      await post('/v1/jobs', t.keys.generate, { model: 'echo-1', input: { prompt: 'p' } })
    ).json()) as { id: string }
    const publish = (run: number, seq: number, type: JobEvent['type'], data: unknown) =>
      t.deps.events.publish({ jobId: job.id, run, seq, type, data, at: Date.now() })
    const ids = (text: string) =>
      [...text.matchAll(/event: (\w+)\ndata: (.*)\nid: ([\d-]+)/g)].map((m) => `${m[3]} ${m[1]} ${m[2]}`)
    const following = get(`/v1/jobs/${job.id}/stream`, t.keys.generate)
    await new Promise((r) => setTimeout(r, 50))
    await publish(1, 1, 'start', { attempt: 1 })
    await publish(1, 2, 'token', { index: 0, text: 'a' })
    // Run 1's worker lost its lease; run 2 starts over. Its late token is dropped.
    await publish(2, 1, 'start', { attempt: 2 })
    await publish(1, 3, 'token', { index: 0, text: 'stale' })
    await publish(2, 2, 'token', { index: 0, text: 'a' })
    await publish(2, 3, 'completed', { ok: true })
    expect(ids(await (await following).text())).toEqual([
      '1-1 start {"attempt":1}',
      '1-2 token {"index":0,"text":"a"}',
      '2-1 start {"attempt":2}',
      '2-2 token {"index":0,"text":"a"}',
      '2-3 completed {"ok":true}',
    ])
    const resumed = await get(`/v1/jobs/${job.id}/stream`, t.keys.generate, { 'last-event-id': '1-2' })
    expect(ids(await resumed.text())).toEqual([
      '2-1 start {"attempt":2}',
      '2-2 token {"index":0,"text":"a"}',
      '2-3 completed {"ok":true}',
    ])
    const inRun2 = await get(`/v1/jobs/${job.id}/stream`, t.keys.generate, { 'last-event-id': '2-2' })
    expect(ids(await inRun2.text())).toEqual(['2-3 completed {"ok":true}'])
  })
})

describe('internal events route', () => {
  it('needs the internal token (401) and publishes into the hub', async () => {
    await edge({ worker: false })
    const events = [{ jobId: 'job_x', seq: 1, type: 'completed', data: { ok: true }, at: Date.now() }]
    const bad = await t.app.request('/internal/events', {
      method: 'POST',
      headers: { authorization: 'Bearer wrong-token-wrong-token', 'content-type': 'application/json' },
      body: JSON.stringify(events),
    })
    await expectError(bad, 401, 'invalid_internal_token')
    const ok = await t.app.request('/internal/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${INTERNAL_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(events),
    })
    expect(await ok.json()).toEqual({ accepted: 1 })
    const seen = []
    for await (const e of t.deps.events.subscribe('job_x')) seen.push(e)
    expect(seen.map((e) => e.type)).toEqual(['completed'])
    const invalid = await t.app.request('/internal/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${INTERNAL_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify([{ jobId: 'j', seq: 'one', type: 'token' }]),
    })
    await expectError(invalid, 400, expect.any(String) as never, '[0].seq')
  })

  it('does not exist without PGPT_INTERNAL_TOKEN', async () => {
    await edge({ worker: false, env: { PGPT_INTERNAL_TOKEN: '' } })
    const res = await t.app.request('/internal/events', { method: 'POST', body: '[]' })
    expect(res.status).toBe(404)
  })
})

describe('admin keys', () => {
  it('creates, lists, uses and revokes a key; another tenant’s key is a 404', async () => {
    await edge()
    const created = await post('/v1/admin/keys', t.keys.admin, {
      name: 'ci',
      scopes: ['generate'],
      limits: { requests_per_minute: 5 },
    })
    expect(created.status).toBe(201)
    const k = (await created.json()) as { id: string; secret: string; tenant: string; display: string }
    expect(k.secret).toMatch(/^pgpt_/)
    expect(k.tenant).toBe('t1')
    const used = await get('/v1/models', k.secret)
    expect(used.status).toBe(200)
    expect(used.headers.get('x-ratelimit-limit-requests')).toBe('5')
    const listed = (await (await get('/v1/admin/keys', t.keys.admin)).json()) as {
      data: { id: string; tenant: string }[]
    }
    expect(listed.data.map((x) => x.tenant)).toEqual(['t1', 't1', 't1', 't1'])
    expect(JSON.stringify(listed)).not.toContain(k.secret)
    expect(JSON.stringify(listed)).not.toContain('hash')
    await expectError(
      await t.app.request(`/v1/admin/keys/${k.id}`, { method: 'DELETE', headers: t.auth(t.keys.other) }),
      404,
      'api_key_not_found',
    )
    const del = await t.app.request(`/v1/admin/keys/${k.id}`, {
      method: 'DELETE',
      headers: t.auth(t.keys.admin),
    })
    expect(await del.json()).toEqual({ id: k.id, object: 'api_key', deleted: true })
    await expectError(await get('/v1/models', k.secret), 401, 'invalid_api_key')
    await expectError(
      await post('/v1/admin/keys', t.keys.admin, { name: 'x', scopes: ['root'] }),
      400,
      'invalid_value',
      'scopes[0]',
    )
  })
})
