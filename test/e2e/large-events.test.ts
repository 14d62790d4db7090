/**
 * A big job's usage is not lost (issue 20: a streamed chat with n=16,
 * top_logprobs=20 ended in a 504 with no [DONE] and /v1/usage did not move).
 * Its `completed` event carries every choice's tokens and top logprobs,
 * megabytes, above the public JSON limit PGPT_MAX_BODY_BYTES; the worker
 * process's HttpEvents POSTs it to the edge's /internal/events, which has its
 * own limit (PGPT_MAX_INTERNAL_BODY_BYTES). The edge on @hono/node-server, a
 * worker PROCESS running the real generation engine on a tiny model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { silentLogger } from '../../core/logger.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel, publishTestModel } from '../helpers/tiny-models.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'large-events-internal-token-0123'

let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let apiKey: string

beforeAll(async () => {
  h = createHarness()
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore(), logger: silentLogger },
  })
  const model = await buildTestModel({ kind: 'random', seed: 7, maxPositions: 1024 })
  await publishTestModel(edge.deps.store, model, 'big')
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate'] })).secret
  worker = await h.startEdgeWorker('generation', edge.url, TOKEN)
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await h?.cleanup()
})

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...init.headers },
  })

async function outputTokens(): Promise<{ requests: number; output: number }> {
  const since = Math.floor(Date.now() / 1000) - 1800
  const res = await api(`/v1/usage?start_time=${since}&bucket_width=1d`)
  expect(res.status).toBe(200)
  const page = (await res.json()) as {
    data: Array<{ results: Array<{ num_model_requests: number; output_tokens: number }> }>
  }
  const all = page.data.flatMap((b) => b.results)
  return {
    requests: all.reduce((s, r) => s + r.num_model_requests, 0),
    output: all.reduce((s, r) => s + r.output_tokens, 0),
  }
}

describe('a job whose events are larger than PGPT_MAX_BODY_BYTES', () => {
  it('a streamed chat with n=16, top_logprobs=20 ends with [DONE] and /v1/usage counts its tokens', async () => {
    const before = await outputTokens()
    const res = await api('/v1/chat/completions', {
      method: 'POST',
      // Before the fix the stream hung until the edge's timeout: fail fast instead.
      signal: AbortSignal.timeout(45_000),
      body: JSON.stringify({
        model: 'big',
        messages: [{ role: 'user', content: 'Tell me sixteen stories.' }],
        n: 16,
        logprobs: true,
        top_logprobs: 20,
        max_tokens: 150,
        stream: true,
        stream_options: { include_usage: true },
      }),
    })
    expect(res.status).toBe(200)
    const body = await res.text()
    // The client got megabytes of tokens, more than the public JSON limit (1 MiB by default).
    expect(Buffer.byteLength(body)).toBeGreaterThan(edge.deps.config.PGPT_MAX_BODY_BYTES)
    const data = body
      .split('\n\n')
      .map((e) => e.replace(/^data: /, ''))
      .filter(Boolean)
    expect(data.at(-1)).toBe('[DONE]')
    const usage = (JSON.parse(data.at(-2)!) as { usage: { completion_tokens: number } }).usage
    expect(usage.completion_tokens).toBeGreaterThan(16)

    const after = await waitFor(
      async () => {
        const now = await outputTokens()
        return now.requests > before.requests ? now : null
      },
      10_000,
      'the usage record',
    )
    expect(after.output - before.output).toBe(usage.completion_tokens)
  }, 90_000)
})
