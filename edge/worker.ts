/**
 * The edge on Cloudflare Workers (wrangler.jsonc: main = edge/worker.ts).
 * Bindings become deps: RATE_LIMITER (Durable Object namespace) → the exact,
 * shared GCRA limiter; MODELS (R2 bucket) → the object store (model manifests)
 * and, over it with R2's atomic conditional writes, the job records, API keys
 * and usage records (core/adapters/object-*-store.ts: the same layout the
 * Node workers and Lambda read on S3); `caches.default` → the response cache;
 * PGPT_QUEUE=sqs → the SQS queue the workers poll; PGPT_* vars and secrets →
 * Config. PGPT_API_KEY registers the bootstrap admin key.
 *
 * EVENTS (Durable Object namespace) → the events hub: one object per job, so
 * events that workers post to any isolate's /internal/events reach the
 * isolate holding the client's request or stream.
 * A missing binding falls back to memory and is logged once.
 */
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryRateLimiter } from '../core/adapters/memory-rate-limiter.js'
import { MemoryResponseCache } from '../core/adapters/memory-response-cache.js'
import { parseConfig } from '../core/config.js'
import { createLogger } from '../core/logger.js'
import { createMetrics } from '../core/metrics.js'
import { createModelCatalog } from '../core/records/model-catalog.js'
import { retentionPolicy, sweepExpired } from '../core/retention.js'
import { memoryBackends, objectRecords, openWiring } from '../core/wiring.js'
import { DurableObjectEvents, type EventsNamespace } from './adapters/durable-object-events.js'
import {
  DurableObjectRateLimiter,
  type RateLimiterNamespace,
} from './adapters/durable-object-rate-limiter.js'
import { type R2BucketLike, R2ObjectStore } from './adapters/r2-store.js'
import { type CacheLike, WorkersCache } from './adapters/workers-cache.js'
import { createApp } from './app.js'
import type { EdgeDeps } from './deps.js'
import { ensureKey } from './keys.js'

export { EventsHubDurableObject } from './adapters/durable-object-events.js'
export { RateLimiterDurableObject } from './adapters/durable-object-rate-limiter.js'

export interface WorkerEnv {
  RATE_LIMITER?: RateLimiterNamespace
  EVENTS?: EventsNamespace
  MODELS?: R2BucketLike
  [name: string]: unknown
}

interface Built {
  app: ReturnType<typeof createApp>
  deps: EdgeDeps
  ready: Promise<unknown>
}

let built: Built | undefined

function build(env: WorkerEnv): Built {
  const vars = Object.fromEntries(Object.entries(env).filter(([, v]) => typeof v === 'string')) as Record<
    string,
    string
  >
  const config = parseConfig({ PGPT_PROFILE: 'cloudflare', ...vars })
  const logger = createLogger({ service: 'edge', level: config.PGPT_LOG_LEVEL })
  const missing = (what: string) =>
    logger.warn({ binding: what }, `binding ${what} missing: using in-memory fallback`)
  if (!env.RATE_LIMITER) missing('RATE_LIMITER')
  if (!env.MODELS) missing('MODELS')
  if (!env.EVENTS) missing('EVENTS')
  const defaultCache = (globalThis as { caches?: { default?: CacheLike } }).caches?.default
  // The R2 binding is the store and, when bound, holds the records too (no disk on Workers).
  const memory = memoryBackends(config)
  const models = env.MODELS
  const wiring = openWiring(config, {
    ...memory,
    store: () => (models ? new R2ObjectStore(models) : memory.store()),
    records: (store) => (models ? objectRecords(store) : memory.records(store)),
  })
  const { store } = wiring
  const records = wiring.records()
  const keys = records.keys
  const deps: EdgeDeps = {
    queue: wiring.queue().queue,
    jobs: records.jobs,
    events: env.EVENTS ? new DurableObjectEvents(env.EVENTS) : new MemoryEvents(),
    store,
    keys,
    rateLimiter: env.RATE_LIMITER ? new DurableObjectRateLimiter(env.RATE_LIMITER) : new MemoryRateLimiter(),
    cache: defaultCache ? new WorkersCache(defaultCache) : new MemoryResponseCache(),
    usage: records.usage,
    config,
    logger,
    metrics: createMetrics(),
    models: createModelCatalog(store),
    // Usage writes, stream relays and job follow-ups outlive the response.
    waitUntil: (c, p) => c.executionCtx.waitUntil(p),
  }
  const ready = config.PGPT_API_KEY ? ensureKey(keys, config.PGPT_API_KEY) : Promise.resolve()
  return { app: createApp(deps), deps, ready }
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: unknown): Promise<Response> {
    built ??= build(env)
    await built.ready
    return built.app.fetch(request, env as Record<string, unknown>, ctx as never)
  },
  /** The Cron Trigger of wrangler.jsonc: the retention sweep (core/retention.ts) over the R2 bucket's files, batch data and job records. */
  async scheduled(_controller: unknown, env: WorkerEnv): Promise<void> {
    built ??= build(env)
    if (!env.MODELS) return // without the bucket, nothing outlives the isolate
    const { store, jobs, logger, config } = built.deps
    const r = await sweepExpired({ store, jobs, logger }, retentionPolicy(config))
    logger.info(
      { files: r.files.length, batchObjects: r.batchObjects, jobs: r.jobs.length, truncated: r.truncated },
      'retention sweep done',
    )
  },
}
