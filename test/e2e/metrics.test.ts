/**
 * /metrics on the edge and on a worker process, read with a Prometheus
 * text-format parser: every metric of docs/operations.md is there, and each
 * moves when traffic flows (a webhook job, a stream, a cache hit, a 429).
 */
import { join } from 'node:path'
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { parseConfig } from '../../core/config.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel } from '../helpers/tiny-models.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'metrics-internal-token-0123456789'
const METRICS_TOKEN = 'metrics-bearer-0123'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let workerPort: number
let receiver: Receiver
let apiKey: string

const EDGE_METRICS = [
  'pgpt:http_requests_total',
  'pgpt:http_request_duration_seconds',
  'pgpt:time_to_first_token_seconds',
  'pgpt:rate_limit_rejections_total',
  'pgpt:response_cache_lookups_total',
]
const WORKER_METRICS = [
  'pgpt:queue_depth',
  'pgpt:queue_oldest_message_age_seconds',
  'pgpt:jobs_total',
  'pgpt:prompt_tokens_total',
  'pgpt:generation_tokens_total',
  'pgpt:batch_size',
  'pgpt:batch_size_max',
  'pgpt:model_load_duration_seconds',
  'pgpt:model_cache_requests_total',
  'pgpt:webhook_deliveries_total',
  'pgpt:webhook_attempts',
]

beforeAll(async () => {
  h = createHarness()
  receiver = await startReceiver()
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
    PGPT_METRICS_TOKEN: METRICS_TOKEN,
  })
  edge = await startEdge({ config, port: 0, deps: { keys: new MemoryKeyStore() } })
  const model = await buildTestModel({ kind: 'random', seed: 3 })
  await publishModelFolder(edge.deps.store, model.folder, { id: 'tiny', owner: null, contextLength: 96 })
  apiKey = (
    await createKey(edge.deps.keys, {
      tenant: 'acme',
      name: 'metrics',
      scopes: ['generate'],
      limits: { requestsPerMinute: 8 },
    })
  ).secret
  worker = h.spawnWorker({
    PGPT_WORKER_KINDS: 'generation',
    PGPT_EDGE_URL: edge.url,
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_METRICS_TOKEN: METRICS_TOKEN,
    PGPT_WORKER_METRICS_PORT: '0',
    PGPT_MODEL_CACHE_DIR: join(h.dir, 'model-cache'),
  })
  const line = await worker.waitForLog((l) => l.msg === 'worker /metrics and /health listening', 30_000)
  workerPort = Number(line.port)
  await worker.waitForLog((l) => l.msg === 'worker started', 30_000)
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await receiver?.close()
  await h?.cleanup()
})

type Scrape = Map<string, MetricFamily & { observations: number }>

/**
 * Parse with the text-format parser (it throws on a malformed line). The
 * parser keeps only one series of a labelled histogram, so a histogram's
 * observations are summed from its `_count` lines of the same text.
 */
async function scrape(url: string): Promise<Scrape> {
  const unauthorized = await fetch(url)
  expect(unauthorized.status).toBe(401)
  const res = await fetch(url, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  expect(res.status).toBe(200)
  const text = await res.text()
  const counts = (name: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${name}_count{`) || l.startsWith(`${name}_count `))
      .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, { ...f, observations: counts(f.name) }]))
}

/** Sum of a family's samples: counter/gauge values, or a histogram's observations. */
const total = (f: (MetricFamily & { observations: number }) | undefined) =>
  f?.type === 'HISTOGRAM' ? f.observations : (f?.metrics ?? []).reduce((s, m) => s + Number(m.value ?? 0), 0)

const api = (path: string, body?: unknown) =>
  fetch(`${edge.url}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  })

describe('/metrics', () => {
  it('lists every documented metric on the edge and the worker, and each moves with traffic', async () => {
    const edgeBefore = await scrape(`${edge.url}/metrics`)
    const workerBefore = await scrape(`http://127.0.0.1:${workerPort}/metrics`)

    // A webhook job, a stream (TTFT), the same repeatable request twice (cache hit), then 429s.
    const job = await api('/v1/jobs', {
      model: 'tiny',
      input: { prompt: 'hello there', max_tokens: 4, temperature: 0 },
      webhook: receiver.url,
    })
    expect(job.status).toBe(201)
    // Read the stream to its end: time to first token is observed when the first token is relayed.
    const stream = await api('/v1/completions', { model: 'tiny', prompt: 'abc', max_tokens: 3, stream: true })
    expect(stream.status).toBe(200)
    expect((await stream.text()).trim().endsWith('data: [DONE]')).toBe(true)
    const body = { model: 'tiny', prompt: 'same', max_tokens: 2, temperature: 0 }
    expect((await api('/v1/completions', body)).headers.get('x-cache')).toBe('MISS')
    expect((await api('/v1/completions', body)).headers.get('x-cache')).toBe('HIT')
    let limited = 0
    for (let i = 0; i < 10 && limited === 0; i++) if ((await api('/v1/models')).status === 429) limited++
    expect(limited).toBe(1)
    await waitFor(() => receiver.received.length >= 2, 20_000, 'webhooks for start and completed')

    const edgeAfter = await scrape(`${edge.url}/metrics`)
    for (const name of EDGE_METRICS) {
      expect(edgeAfter.has(name), name).toBe(true)
      expect(total(edgeAfter.get(name)), name).toBeGreaterThan(total(edgeBefore.get(name)))
    }
    // The worker publishes queue stats every few seconds and webhook outcomes when they end.
    const workerAfter = await waitFor(
      async () => {
        const m = await scrape(`http://127.0.0.1:${workerPort}/metrics`)
        return WORKER_METRICS.every((n) => m.has(n)) && total(m.get('pgpt:webhook_attempts')) >= 2 ? m : null
      },
      20_000,
      'worker metrics',
    )
    for (const name of WORKER_METRICS) expect(workerAfter.has(name), name).toBe(true)
    const moved = [
      'pgpt:jobs_total',
      'pgpt:prompt_tokens_total',
      'pgpt:generation_tokens_total',
      'pgpt:batch_size_max',
      'pgpt:model_load_duration_seconds',
      'pgpt:model_cache_requests_total',
      'pgpt:webhook_deliveries_total',
      'pgpt:webhook_attempts',
    ]
    for (const name of moved)
      expect(total(workerAfter.get(name)), name).toBeGreaterThan(total(workerBefore.get(name)))
    const depth = workerAfter.get('pgpt:queue_depth')!
    expect(new Set(depth.metrics.map((m) => m.labels?.state))).toEqual(
      new Set(['visible', 'in_flight', 'delayed']),
    )
  })
})
