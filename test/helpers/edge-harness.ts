/**
 * A whole edge for tests: createApp over in-memory adapters, the echo worker
 * test double answering jobs, two published models and keys of two tenants.
 */

import { MemoryEvents } from '../../core/adapters/memory-events.js'
import { MemoryJobStore } from '../../core/adapters/memory-job-store.js'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { MemoryQueue } from '../../core/adapters/memory-queue.js'
import { MemoryRateLimiter } from '../../core/adapters/memory-rate-limiter.js'
import { MemoryResponseCache } from '../../core/adapters/memory-response-cache.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { type Config, parseConfig } from '../../core/config.js'
import { silentLogger } from '../../core/logger.js'
import { createMetrics } from '../../core/metrics.js'
import { type ModelManifest, manifestKey } from '../../core/model-manifest.js'
import type { Scope } from '../../core/ports/key-store.js'
import { createModelCatalog } from '../../core/records/model-catalog.js'
import { createApp } from '../../edge/app.js'
import type { EdgeDeps } from '../../edge/deps.js'
import { createKey } from '../../edge/keys.js'
import { type EchoWorker, startEchoWorker } from './echo-worker.js'

export const INTERNAL_TOKEN = 'internal-token-for-tests-0123456789'

export const manifest = (id: string, owner: string | null, contextLength = 256): ModelManifest => ({
  id,
  owner,
  created: 1_700_000_000,
  context_length: contextLength,
  files: [],
  source: 'published',
})

export interface TestEdgeOptions {
  env?: Record<string, string>
  /** Start the echo worker (default true). */
  worker?: boolean
  tokenDelayMs?: number
  deps?: Partial<EdgeDeps>
}

export async function makeTestEdge(o: TestEdgeOptions = {}) {
  const config: Config = parseConfig({
    PGPT_LOG_LEVEL: 'silent',
    PGPT_INTERNAL_TOKEN: INTERNAL_TOKEN,
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'false',
    ...o.env,
  })
  const store = new MemoryObjectStore()
  for (const m of [manifest('echo-1', null), manifest('private-t2', 't2'), manifest('tiny', null, 32)])
    await store.put(manifestKey(m.id), JSON.stringify(m))
  const usage = new MemoryUsageStore()
  const deps: EdgeDeps = {
    queue: new MemoryQueue('generation'),
    jobs: new MemoryJobStore(),
    events: new MemoryEvents(),
    store,
    keys: new MemoryKeyStore(),
    rateLimiter: new MemoryRateLimiter(),
    cache: new MemoryResponseCache(),
    usage,
    config,
    logger: silentLogger,
    metrics: createMetrics(),
    models: createModelCatalog(store, { ttlMs: 1000 }),
    syncTimeoutMs: 10_000,
    ...o.deps,
  }
  const app = createApp(deps)
  const worker: EchoWorker | undefined =
    o.worker === false
      ? undefined
      : startEchoWorker({
          queue: deps.queue,
          jobs: deps.jobs,
          events: deps.events,
          usage: deps.usage,
          tokenDelayMs: o.tokenDelayMs,
        })
  const key = async (
    tenant: string,
    scopes: Scope[],
    limits?: { requestsPerMinute?: number; tokensPerMinute?: number },
  ) =>
    (
      await createKey(deps.keys, {
        tenant,
        name: `${tenant}-${scopes.join('-')}`,
        scopes,
        ...(limits ? { limits } : {}),
      })
    ).secret
  const keys = {
    admin: await key('t1', ['generate', 'batch', 'fine-tune', 'admin']),
    generate: await key('t1', ['generate']),
    batchOnly: await key('t1', ['batch']),
    other: await key('t2', ['generate', 'admin']),
    /** The platform operator's key (as the bootstrap key PGPT_API_KEY): every scope. */
    operator: await key('ops', ['generate', 'batch', 'fine-tune', 'admin', 'operator']),
  }
  return {
    app,
    deps,
    usage,
    keys,
    key,
    worker,
    auth: (secret: string) => ({ authorization: `Bearer ${secret}` }),
    async close() {
      await worker?.stop()
    },
  }
}

export type TestEdge = Awaited<ReturnType<typeof makeTestEdge>>
