/**
 * The edge on Cloudflare Workers (wrangler.jsonc: main = edge/worker.ts).
 * Bindings become deps: RATE_LIMITER (Durable Object namespace) → the exact,
 * shared GCRA limiter; MODELS (R2 bucket) → the object store holding model
 * manifests; `caches.default` → the response cache; PGPT_* vars and secrets →
 * Config. PGPT_API_KEY registers the bootstrap admin key.
 *
 * Not yet durable on Workers (in-isolate memory, documented limits): job
 * records, the queue, the events hub, the key store beyond PGPT_API_KEY, and
 * usage records. A missing binding falls back to memory and is logged once.
 */
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryRateLimiter } from '../core/adapters/memory-rate-limiter.js'
import { MemoryResponseCache } from '../core/adapters/memory-response-cache.js'
import { parseConfig } from '../core/config.js'
import { createLogger } from '../core/logger.js'
import { createMetrics } from '../core/metrics.js'
import {
  DurableObjectRateLimiter,
  type RateLimiterNamespace,
} from './adapters/durable-object-rate-limiter.js'
import { type R2BucketLike, R2ObjectStore } from './adapters/r2-store.js'
import { type CacheLike, WorkersCache } from './adapters/workers-cache.js'
import { createApp } from './app.js'
import type { EdgeDeps } from './deps.js'
import { ensureKey } from './keys.js'
import { createModelCatalog } from './model-catalog.js'
import { MemoryJobStore } from './testing/memory-job-store.js'
import { MemoryKeyStore } from './testing/memory-key-store.js'
import { MemoryObjectStore } from './testing/memory-object-store.js'
import { MemoryQueue } from './testing/memory-queue.js'
import { MemoryUsageStore } from './testing/memory-usage-store.js'

export { RateLimiterDurableObject } from './adapters/durable-object-rate-limiter.js'

export interface WorkerEnv {
  RATE_LIMITER?: RateLimiterNamespace
  MODELS?: R2BucketLike
  [name: string]: unknown
}

interface Built {
  app: ReturnType<typeof createApp>
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
  const defaultCache = (globalThis as { caches?: { default?: CacheLike } }).caches?.default
  const store = env.MODELS ? new R2ObjectStore(env.MODELS) : new MemoryObjectStore()
  const keys = new MemoryKeyStore()
  const deps: EdgeDeps = {
    queue: new MemoryQueue('generation'),
    jobs: new MemoryJobStore(),
    events: new MemoryEvents(),
    store,
    keys,
    rateLimiter: env.RATE_LIMITER ? new DurableObjectRateLimiter(env.RATE_LIMITER) : new MemoryRateLimiter(),
    cache: defaultCache ? new WorkersCache(defaultCache) : new MemoryResponseCache(),
    usage: new MemoryUsageStore(),
    config,
    logger,
    metrics: createMetrics(),
    models: createModelCatalog(store),
  }
  const ready = config.PGPT_API_KEY ? ensureKey(keys, config.PGPT_API_KEY) : Promise.resolve()
  return { app: createApp(deps), ready }
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: unknown): Promise<Response> {
    built ??= build(env)
    await built.ready
    return built.app.fetch(request, env as Record<string, unknown>, ctx as never)
  },
}
