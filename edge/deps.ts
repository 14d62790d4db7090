/**
 * What the edge needs from the outside world: the ports, configuration,
 * logging, metrics and the model catalog. Each runtime entry (edge/node.ts,
 * edge/worker.ts, functions/api.ts) builds one of these and calls createApp.
 */
import type { Context } from 'hono'
import type { Config } from '../core/config.js'
import type { Logger } from '../core/logger.js'
import type { Metrics } from '../core/metrics.js'
import type {
  ApiKeyRecord,
  Events,
  JobStore,
  KeyStore,
  ObjectStore,
  Queue,
  RateLimiter,
  ResponseCache,
  UsageStore,
} from '../core/ports/index.js'
import type { ModelCatalog } from '../core/records/model-catalog.js'

/** The parts of core/metrics.ts the edge uses (so a runtime may pass a lighter one). */
export type EdgeMetrics = Pick<
  Metrics,
  'requests' | 'requestLatency' | 'timeToFirstToken' | 'rateLimitRejections' | 'cacheLookups'
> & { registry: { metrics(): Promise<string>; contentType: string } }

export interface EdgeDeps {
  queue: Queue
  jobs: JobStore
  events: Events
  store: ObjectStore
  keys: KeyStore
  rateLimiter: RateLimiter
  cache: ResponseCache
  usage: UsageStore
  config: Config
  logger: Logger
  metrics: EdgeMetrics
  models: ModelCatalog
  /** The tenant's webhook signing secret (`whsec_…`), when this edge knows the signing key. */
  webhookSecret?: (tenant: string) => Promise<string>
  /** Now, epoch ms, for expiry (files' `expires_after`); tests pass their own clock. Default Date.now. */
  clock?: () => number
  /** Longest wait of a synchronous request for its job, in ms. Default 300 000. */
  syncTimeoutMs?: number
  /**
   * Keeps background work alive after the response (Workers' waitUntil, set
   * by edge/worker.ts). Node and Lambda keep the process alive anyway.
   */
  waitUntil?: (c: Context, p: Promise<unknown>) => void
  /**
   * The client's address, where the runtime tells it (edge/node.ts: the socket's peer), for the
   * per-address limit of requests without a valid key (PGPT_RATE_LIMIT_UNAUTH_RPM). Unset: no such limit.
   */
  clientAddress?: (c: Context) => string | undefined
  /**
   * Commit the usage records the edge writes (cache hits; a job's is its
   * worker's) before the response is returned (Lambda: the
   * container is frozen once the handler returns, so a record still being
   * written would wait for the next invocation, or be lost with the
   * container). Elsewhere the response does not wait for the commit
   * (edge/generation/run.ts recordUsage).
   */
  usageBeforeResponse?: boolean
}

export interface AppVariables {
  requestId: string
  log: Logger
  key: ApiKeyRecord
  /** Model label for metrics, once known. */
  model: string
  /** Set by streaming handlers, which observe their own latency at the last byte. */
  streaming: boolean
  startedAt: number
}

export type AppEnv = { Variables: AppVariables; Bindings: Record<string, unknown> }
export type AppContext = Context<AppEnv>
