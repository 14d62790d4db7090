/**
 * GET /v1/usage over the real SQLite usage store: totals equal, token for
 * token, the sum of the `usage` objects the API returned for a mixed workload
 * (plain, streamed with and without include_usage, a client that leaves
 * mid-stream — metered by what its canceled job generated —, a cache hit, a batch run by the worker's batch handlers), per
 * key and per model, and tenants do not see each other's usage.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { SqliteUsageStore } from '../../core/adapters/sqlite-usage-store.js'
import { silentLogger } from '../../core/logger.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import type { GenerationInput, GenerationOutput } from '../../core/protocol.js'
import { echoChoice, echoSource } from '../../test/helpers/echo-worker.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'
import { createBatchHandlers } from '../../workers/batches/handlers.js'
import { runWorker } from '../../workers/worker-loop.js'
import { verifyKey } from '../keys.js'

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

type Totals = { requests: number; input: number; output: number }

/** Adds to the totals of `group` in `into`. */
function addTo(into: Record<string, Totals>, group: string, requests: number, input: number, output: number) {
  const g = into[group] ?? { requests: 0, input: 0, output: 0 }
  into[group] = { requests: g.requests + requests, input: g.input + input, output: g.output + output }
}

/** Usage summed per group (`api_key` id or `model`) over every bucket. */
async function groups(key: string, by: 'api_key' | 'model'): Promise<Record<string, Totals>> {
  const out: Record<string, Totals> = {}
  for (const r of (await totals(key, `&group_by=${by}`)).results)
    addTo(
      out,
      (by === 'model' ? r.model : r.api_key_id) ?? '',
      r.num_model_requests,
      r.input_tokens,
      r.output_tokens,
    )
  return out
}

const batchLine = (id: string, model: string, prompt: string, maxTokens: number, extra = {}) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/completions',
    body: { model, prompt, max_tokens: maxTokens, ...extra },
  })

/** The echo double as the batch handlers' engine: reversed words, one prompt token per word. */
const echoEngine = {
  maxBatchSize: 4,
  async generate(input: GenerationInput): Promise<GenerationOutput> {
    const answers = Array.from({ length: input.sampling.n }, (_, i) => echoChoice(input, i))
    return {
      model: input.model,
      choices: answers.map((a) => a.choice),
      usage: {
        promptTokens: echoSource(input).split(/\s+/).filter(Boolean).length,
        completionTokens: answers.reduce((n, a) => n + a.pieces.length, 0),
      },
    }
  },
}

interface OutputLine {
  custom_id: string
  response: {
    status_code: number
    body: { model: string; usage: { prompt_tokens: number; completion_tokens: number } }
  }
}

/**
 * A batch as a client runs one (upload, create, poll, download), with the
 * edge's queue served by the worker loop and the real batch handlers, which
 * write its usage records. The echo worker double must be stopped: it would
 * take the `batch` message.
 */
async function runBatch(lines: string[]): Promise<{ output: OutputLine[]; errors: string[] }> {
  const key = t.keys.batchOnly
  const form = new FormData()
  form.set('purpose', 'batch')
  form.set('file', new Blob([`${lines.join('\n')}\n`], { type: 'application/jsonl' }), 'in.jsonl')
  const file = await t.app.request('/v1/files', { method: 'POST', headers: t.auth(key), body: form })
  expect(file.status).toBe(200)
  const created = await post('/v1/batches', key, {
    input_file_id: ((await file.json()) as { id: string }).id,
    endpoint: '/v1/completions',
    completion_window: '24h',
  })
  expect(created.status).toBe(200)
  const { id } = (await created.json()) as { id: string }
  const h = createBatchHandlers({
    store: t.deps.store,
    jobs: t.deps.jobs,
    chunkQueue: t.deps.queue,
    engine: echoEngine,
    models: t.deps.models,
    maxReceiveCount: 3,
    usage: t.deps.usage,
    linesPerChunk: 2,
    statusPollMs: 0,
  })
  const stop = new AbortController()
  const worker = runWorker({
    queue: t.deps.queue,
    jobs: t.deps.jobs,
    events: t.deps.events,
    handlers: { batch: h.batch, batch_chunk: h.batch_chunk },
    signal: stop.signal,
    visibilityTimeoutSeconds: 30,
    maxReceiveCount: 3,
    waitTimeSeconds: 1,
    abortableReceive: true,
    statsIntervalMs: 0,
    logger: silentLogger,
  })
  type View = { status: string; output_file_id: string | null; error_file_id: string | null }
  let b: View | undefined
  try {
    await until(async () => {
      b = (await (await get(`/v1/batches/${id}`, key)).json()) as View
      return b.status === 'completed'
    })
  } finally {
    stop.abort()
    await worker
  }
  const read = async (fileId: string | null) =>
    fileId
      ? (await (await get(`/v1/files/${fileId}/content`, key)).text())
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as OutputLine)
      : []
  return {
    output: await read(b!.output_file_id),
    errors: (await read(b!.error_file_id)).map((l) => l.custom_id),
  }
}

describe('GET /v1/usage', () => {
  it('sums to exactly the usage the API returned, for a mixed workload', async () => {
    await t.close()
    // Tokens paced, so a client can leave a stream in the middle.
    t = await makeTestEdge({ deps: { usage: store }, tokenDelayMs: 5 })
    type Usage = { prompt_tokens: number; completion_tokens: number }
    const seen: Record<'generate' | 'batch' | 't2', Totals> = {
      generate: { requests: 0, input: 0, output: 0 },
      batch: { requests: 0, input: 0, output: 0 },
      t2: { requests: 0, input: 0, output: 0 },
    }
    const byModel: Record<string, Totals> = {}
    /** `model`: also in the tenant's per-model totals. */
    const add = (who: keyof typeof seen, u: Usage, model?: string) => {
      addTo(seen, who, 1, u.prompt_tokens, u.completion_tokens)
      if (model) addTo(byModel, model, 1, u.prompt_tokens, u.completion_tokens)
    }
    const gen = (u: Usage) => add('generate', u, 'echo-1')
    // 1. plain completion, temperature 0 (cacheable): MISS, then 2. the same request: HIT (counted, cached).
    const body = { model: 'echo-1', prompt: 'one two three four', max_tokens: 3, temperature: 0 }
    const miss = await post('/v1/completions', t.keys.generate, body)
    expect(miss.headers.get('x-cache')).toBe('MISS')
    gen(((await miss.json()) as { usage: Usage }).usage)
    const hit = await post('/v1/completions', t.keys.generate, body)
    expect(hit.headers.get('x-cache')).toBe('HIT')
    gen(((await hit.json()) as { usage: Usage }).usage)
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
    gen(withUsage.usage!)
    // 4. streamed completion without include_usage: the same request non-streamed tells its usage.
    const streamBody = { model: 'echo-1', prompt: 'x y z', max_tokens: 2 }
    const noUsage = await readStream(
      await post('/v1/completions', t.keys.generate, { ...streamBody, stream: true }),
    )
    expect(noUsage.usage).toBeUndefined()
    expect(noUsage.chunks).toBe(2)
    const twin = (await (
      await post('/v1/completions', t.keys.generate, { ...streamBody, seed: 7 })
    ).json()) as { usage: Usage }
    expect(twin.usage.completion_tokens).toBe(2)
    gen(twin.usage) // the twin itself
    gen(twin.usage) // the stream, which had the same prompt and length
    // 5. a client that leaves mid-stream: its job is canceled, and metered by what the job
    // generated (the canceled job's partial usage, or all of it if it finished first).
    const leftChat = { model: 'echo-1', messages: [{ role: 'user', content: 'a b c d e f g h' }] }
    const left = await post('/v1/chat/completions', t.keys.generate, { ...leftChat, stream: true })
    const reader = left.body!.getReader()
    await reader.read() // the role chunk
    await reader.read() // the first token
    await reader.cancel()
    const leftJobId = left.headers.get('x-pgpt-job-id')!
    let leftJob: JobRecord | null = null
    await until(async () => {
      leftJob = await t.deps.jobs.getById(leftJobId)
      return leftJob?.state === 'succeeded' || leftJob?.state === 'canceled'
    })
    const jobUsage = (leftJob!.output as { usage: { promptTokens: number; completionTokens: number } }).usage
    gen({ prompt_tokens: jobUsage.promptTokens, completion_tokens: jobUsage.completionTokens })
    // 6. another tenant's request: in its totals only.
    const t2 = await t.key('t2', ['generate'])
    const theirs = await post('/v1/completions', t2, { model: 'echo-1', prompt: 'p q r s', max_tokens: 4 })
    add('t2', ((await theirs.json()) as { usage: Usage }).usage)
    // Every generation (the abandoned stream last) is recorded before the worker double stops.
    const t1Generations = seen.generate.requests
    await until(async () => (await totals(t.keys.generate)).requests === t1Generations)
    await t.worker!.stop()

    // 7. a batch of two models with one bad line, run by the real batch handlers (and their
    // metering) in the real worker loop; only the engine is a double.
    const batch = await runBatch([
      batchLine('b1', 'echo-1', 'the whale is white and large', 4),
      batchLine('b2', 'tiny', 'call me ishmael', 5),
      batchLine('b3', 'tiny', 'some years ago never mind how long', 3),
      batchLine('bad', 'echo-1', 'too hot', 2, { temperature: 9 }),
    ])
    expect(batch.errors).toEqual(['bad'])
    expect(batch.output.map((l) => l.custom_id).sort()).toEqual(['b1', 'b2', 'b3'])
    for (const l of batch.output) add('batch', l.response.body.usage, l.response.body.model)
    expect(Object.keys(byModel).sort()).toEqual(['echo-1', 'tiny'])

    // The tenant's totals: every generation, the cache hit, the streams and the batch lines.
    const all = {
      requests: seen.generate.requests + seen.batch.requests,
      input: seen.generate.input + seen.batch.input,
      output: seen.generate.output + seen.batch.output,
    }
    const got = await totals(t.keys.generate)
    expect({ requests: got.requests, input: got.input, output: got.output }).toEqual(all)
    expect((await totals(t.keys.batchOnly)).requests).toBe(all.requests)
    // Per key: the generations under the generating key, the batch under the key that created it.
    const keyId = async (secret: string) => (await verifyKey(t.deps.keys, secret))!.id
    const perKey = await groups(t.keys.generate, 'api_key')
    expect(perKey).toEqual({
      [await keyId(t.keys.generate)]: seen.generate,
      [await keyId(t.keys.batchOnly)]: seen.batch,
    })
    // Per model, across generations and batch lines.
    expect(await groups(t.keys.generate, 'model')).toEqual(byModel)
    // The other tenant reads its own usage only; a tenant's admin too; the operator reads both.
    expect(await groups(t2, 'model')).toEqual({ 'echo-1': seen.t2 })
    expect((await totals(t.keys.admin)).requests).toBe(all.requests)
    const operator = await totals(t.keys.operator)
    expect(operator.requests).toBe(all.requests + seen.t2.requests)
    expect(operator.output).toBe(all.output + seen.t2.output)
  })

  it('meters a stream the client abandons by what its canceled job generated', async () => {
    await t.close()
    t = await makeTestEdge({ deps: { usage: store }, tokenDelayMs: 20 })
    const words = Array.from({ length: 50 }, (_, i) => `w${i}`).join(' ')
    const res = await post('/v1/chat/completions', t.keys.generate, {
      model: 'echo-1',
      messages: [{ role: 'user', content: words }],
      stream: true,
    })
    const reader = res.body!.getReader()
    await reader.read()
    await reader.read()
    await reader.cancel()
    await until(async () => (await totals(t.keys.generate)).requests === 1)
    const job = (await t.deps.jobs.getById(res.headers.get('x-pgpt-job-id')!))!
    expect(job.state).toBe('canceled')
    const generated = (job.output as { usage: { completionTokens: number } }).usage.completionTokens
    expect(generated).toBeGreaterThan(0)
    expect(generated).toBeLessThan(50)
    expect((await totals(t.keys.generate)).output).toBe(generated)
  })

  it('meters a job canceled through the job API by what it generated', async () => {
    await t.close()
    t = await makeTestEdge({ deps: { usage: store }, tokenDelayMs: 20 })
    const words = Array.from({ length: 50 }, (_, i) => `w${i}`).join(' ')
    const created = await post('/v1/jobs', t.keys.generate, {
      model: 'echo-1',
      input: { messages: [{ role: 'user', content: words }] },
    })
    expect(created.status).toBe(201)
    const { id } = (await created.json()) as { id: string }
    await until(async () => (await t.deps.jobs.getById(id))?.state === 'running')
    await new Promise((r) => setTimeout(r, 100)) // a few tokens out
    expect((await post(`/v1/jobs/${id}/cancel`, t.keys.generate, {})).status).toBe(200)
    await until(async () => (await totals(t.keys.generate)).requests === 1)
    const job = (await t.deps.jobs.getById(id))!
    expect(job.state).toBe('canceled')
    const generated = (job.output as { usage: { completionTokens: number } }).usage.completionTokens
    expect(generated).toBeGreaterThan(0)
    expect(generated).toBeLessThan(50)
    expect((await totals(t.keys.generate)).output).toBe(generated)
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

  it('keeps tenants apart; only an operator reads another tenant', async () => {
    await post('/v1/completions', t.keys.generate, { model: 'echo-1', prompt: 'a b', max_tokens: 2 })
    const t2 = await t.key('t2', ['generate'])
    expect((await totals(t2)).requests).toBe(0) // t2's own usage: none
    expect((await totals(t.keys.other)).requests).toBe(0) // t2's admin key: t2 only
    expect((await totals(t.keys.operator)).requests).toBe(1) // the operator: every tenant
    expect((await totals(t.keys.generate)).requests).toBe(1)
    const denied = await get(`/v1/usage?start_time=${since()}&tenant=t1`, t.keys.generate.replace(/.$/, 'x'))
    expect(denied.status).toBe(401)
    // The operator may name t1; t2's admin may not.
    expect((await totals(t.keys.operator, '&tenant=t1')).requests).toBe(1)
    expect((await get(`/v1/usage?start_time=${since()}&tenant=t1`, t.keys.other)).status).toBe(403)
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

  type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } }

  it('says which time parameter is missing, and names a bad one, never "received NaN"', async () => {
    const missing = await get('/v1/usage', t.keys.generate)
    expect(missing.status).toBe(400)
    const m = ((await missing.json()) as ErrorBody).error
    expect(m).toMatchObject({
      type: 'invalid_request_error',
      param: 'start_time',
      code: 'missing_required_parameter',
    })
    expect(m.message).toContain("'start_time'")
    expect(m.message).toMatch(/missing/i)
    expect(m.message).not.toMatch(/NaN/)

    for (const [query, param] of [
      ['start_time=yesterday', 'start_time'],
      ['start_time=', 'start_time'],
      ['start_time=-5', 'start_time'],
      ['start_time=1.5', 'start_time'],
      [`start_time=${since()}&end_time=soon`, 'end_time'],
    ] as const) {
      const res = await get(`/v1/usage?${query}`, t.keys.generate)
      expect(res.status, query).toBe(400)
      const e = ((await res.json()) as ErrorBody).error
      expect(e.param, query).toBe(param)
      expect(e.message, query).toContain(`'${param}'`)
      expect(e.message, query).not.toMatch(/NaN/)
      expect(e.message, query).toMatch(/epoch seconds|missing/i)
    }
  })
})

describe('GET /v1/webhooks/default/secret', () => {
  it("returns the tenant's secret when the edge knows the signing key, else 503", async () => {
    const none = await get('/v1/webhooks/default/secret', t.keys.admin)
    expect(none.status).toBe(503)
    await t.close()
    t = await makeTestEdge({ deps: { webhookSecret: async (tenant) => `whsec_${tenant}` } })
    const res = await get('/v1/webhooks/default/secret', t.keys.admin)
    expect(await res.json()).toEqual({ object: 'webhook_secret', key: 'whsec_t1' })
    expect(await (await get('/v1/webhooks/default/secret', t.keys.other)).json()).toMatchObject({
      key: 'whsec_t2',
    })
  })
})
