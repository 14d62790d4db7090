/**
 * The whole pipeline over real pieces: the edge on @hono/node-server (local
 * profile: SQLite queue and job store, folder store), a worker PROCESS running
 * the real generation handler on a tiny model published into the store, events
 * pushed from the worker to the edge over POST /internal/events (HttpEvents),
 * and a webhook to a real receiver. The webhook body equals what
 * GET /v1/jobs/{id} returns, and its signature verifies with standardwebhooks.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { createLogger } from '../../core/logger.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel } from '../helpers/tiny-models.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'stack-internal-token-0123456789'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let receiver: Receiver
let apiKey: string
const edgeLog: Array<Record<string, unknown>> = []

beforeAll(async () => {
  h = createHarness()
  receiver = await startReceiver()
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: {
      keys: new MemoryKeyStore(),
      usage: new MemoryUsageStore(),
      logger: createLogger({
        service: 'edge',
        destination: { write: (l: string) => edgeLog.push(JSON.parse(l)) },
      }),
    },
  })
  const model = await buildTestModel({ kind: 'random', seed: 7 })
  await publishModelFolder(edge.deps.store, model.folder, { id: 'tiny', owner: null, contextLength: 96 })
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate'] })).secret
  worker = await h.startEdgeWorker('generation', edge.url, TOKEN)
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await receiver?.close()
  await h?.cleanup()
})

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...init.headers },
  })

describe('edge → queue → worker process → webhook', () => {
  it('an async job with a webhook: the signed body equals GET /v1/jobs/{id}', async () => {
    const res = await api('/v1/jobs', {
      method: 'POST',
      headers: { prefer: 'wait=30', 'x-request-id': 'trace-e2e-42' },
      body: JSON.stringify({
        model: 'tiny',
        input: { prompt: 'The quick brown', max_tokens: 5, temperature: 0 },
        webhook: receiver.url,
        webhook_events_filter: ['completed'],
      }),
    })
    expect(res.status).toBe(201)
    const created = (await res.json()) as { id: string; status: string }
    const got = await waitFor(
      async () => {
        const j = (await (await api(`/v1/jobs/${created.id}`)).json()) as { status: string }
        return j.status === 'succeeded' ? j : null
      },
      30_000,
      'job to succeed',
    )
    await waitFor(() => receiver.received.length >= 1, 10_000, 'the completed webhook')
    const key = readFileSync(join(h.dir, 'webhook-signing-key'), 'utf8').trim()
    const r = receiver.received[0]
    const body = new Webhook(tenantWebhookSecret(key, 'acme')).verify(
      r.body,
      r.headers as Record<string, string>,
    )
    expect(body).toEqual(got)
    expect((got as unknown as { output: { choices: unknown[] } }).output.choices).toHaveLength(1)
    // It ran in the worker process. (Its log line comes over the child's stdout, which may lag
    // the webhook: the worker logs the outcome after logging the delivery, which may be sent at once.)
    await waitFor(
      () => worker.logs.some((l) => l.msg === 'job succeeded' && l.jobId === created.id),
      5_000,
      'the worker to log the job succeeded',
    )
    // One request id, end to end: response, edge log, job record, worker log, webhook headers.
    expect(res.headers.get('x-request-id')).toBe('trace-e2e-42')
    expect(edgeLog.some((l) => l.requestId === 'trace-e2e-42' && l.route === '/v1/jobs')).toBe(true)
    expect((got as unknown as { request_id: string }).request_id).toBe('trace-e2e-42')
    expect(worker.logs.some((l) => l.requestId === 'trace-e2e-42' && l.jobId === created.id)).toBe(true)
    expect(r.headers['x-request-id']).toBe('trace-e2e-42')
  })

  it('a streamed completion: token events travel worker → edge (/internal/events) → SSE', async () => {
    const res = await api('/v1/completions', {
      method: 'POST',
      body: JSON.stringify({
        model: 'tiny',
        prompt: 'Small models',
        max_tokens: 6,
        temperature: 0,
        stream: true,
      }),
    })
    expect(res.status).toBe(200)
    const text = await res.text()
    const chunks = text
      .split('\n')
      .filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
      .map(
        (l) => JSON.parse(l.slice(6)) as { choices: Array<{ text: string; finish_reason: string | null }> },
      )
    expect(text.trim().endsWith('data: [DONE]')).toBe(true)
    // The stream's job ran in the worker process (its log line follows the completed event).
    await waitFor(
      () => worker.logs.filter((l) => l.msg === 'job succeeded').length >= 2,
      5000,
      'the worker log',
    )
    expect(chunks.length).toBeGreaterThanOrEqual(2)
    expect(chunks.at(-1)?.choices[0]?.finish_reason ?? chunks.at(-2)?.choices[0]?.finish_reason).toBeTruthy()
    // The same prompt without streaming gives the same text (temperature 0).
    const whole = (await (
      await api('/v1/completions', {
        method: 'POST',
        body: JSON.stringify({ model: 'tiny', prompt: 'Small models', max_tokens: 6, temperature: 0 }),
      })
    ).json()) as { choices: Array<{ text: string }> }
    expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).toBe(whole.choices[0].text)
  })
})
