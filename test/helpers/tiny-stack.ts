/**
 * The local stack over a tiny model, for end-to-end tests that need the real
 * generation engine but not a real model: the edge on @hono/node-server
 * (local profile, in-memory keys; usage in the data folder's SQLite file,
 * where the worker records it), one worker PROCESS running
 * `generation` that publishes its events to the edge, a random-weight model
 * published as `modelId`, and a `generate` key of tenant `acme`.
 */
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { parseConfig } from '../../core/config.js'
import { silentLogger } from '../../core/logger.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel, publishTestModel } from './tiny-models.js'
import { createHarness, type Harness, type WorkerChild } from './worker-process-harness.js'

export interface TinyStack {
  h: Harness
  edge: RunningEdge
  worker: WorkerChild
  /** fetch against the edge with the key (JSON content type unless overridden). */
  api(path: string, init?: RequestInit): Promise<Response>
  /** The tenant's usage over the last half hour, summed over every bucket. */
  usageTotals(): Promise<{ requests: number; input: number; output: number }>
  close(): Promise<void>
}

export async function startTinyStack(o: {
  token: string
  modelId: string
  maxPositions: number
}): Promise<TinyStack> {
  const h = createHarness()
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: o.token,
  })
  const edge = await startEdge({
    config,
    port: 0,
    deps: { keys: new MemoryKeyStore(), logger: silentLogger },
  })
  const model = await buildTestModel({ kind: 'random', seed: 7, maxPositions: o.maxPositions })
  await publishTestModel(edge.deps.store, model, o.modelId)
  const apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate'] }))
    .secret
  const worker = await h.startEdgeWorker('generation', edge.url, o.token)
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${edge.url}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...init.headers },
    })
  return {
    h,
    edge,
    worker,
    api,
    async usageTotals() {
      const since = Math.floor(Date.now() / 1000) - 1800
      const res = await api(`/v1/usage?start_time=${since}&bucket_width=1d`)
      if (res.status !== 200) throw new Error(`GET /v1/usage answered ${res.status}: ${await res.text()}`)
      const page = (await res.json()) as {
        data: Array<{
          results: Array<{ num_model_requests: number; input_tokens: number; output_tokens: number }>
        }>
      }
      const all = page.data.flatMap((b) => b.results)
      return {
        requests: all.reduce((s, r) => s + r.num_model_requests, 0),
        input: all.reduce((s, r) => s + r.input_tokens, 0),
        output: all.reduce((s, r) => s + r.output_tokens, 0),
      }
    },
    async close() {
      worker.kill('SIGTERM')
      await worker.exited
      await edge.close()
      await h.cleanup()
    },
  }
}
