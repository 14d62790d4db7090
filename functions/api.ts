/**
 * The edge on AWS Lambda (API Gateway HTTP API / function URL) via
 * hono/aws-lambda. `handler` buffers responses; `streamHandler` is for
 * function URLs with response streaming (SSE). Deps follow the config:
 * PGPT_QUEUE=sqs → SQS, PGPT_STORE=s3 → S3, PGPT_RECORDS=object → job
 * records, keys and usage over that store (shared with the workers and the
 * CLI); PGPT_API_KEY registers the bootstrap admin key.
 *
 * Per container, in memory (documented limits): the events hub, rate-limit
 * buckets and the response cache; without PGPT_RECORDS=object also records.
 */
import { handle, streamHandle } from 'hono/aws-lambda'
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryRateLimiter } from '../core/adapters/memory-rate-limiter.js'
import { MemoryResponseCache } from '../core/adapters/memory-response-cache.js'
import { type Config, parseConfig } from '../core/config.js'
import { createLogger } from '../core/logger.js'
import { createMetrics } from '../core/metrics.js'
import { createModelCatalog } from '../core/records/model-catalog.js'
import { memoryBackends, openWiring } from '../core/wiring.js'
import { createApp } from '../edge/app.js'
import type { EdgeDeps } from '../edge/deps.js'
import { ensureKey } from '../edge/keys.js'

export function createLambdaDeps(config: Config): EdgeDeps {
  const logger = createLogger({ service: 'edge-lambda', level: config.PGPT_LOG_LEVEL })
  // No disk outlives a Lambda container: what the config names no cloud service for is in memory.
  const wiring = openWiring(config, memoryBackends(config))
  const { store } = wiring
  const records = wiring.records()
  return {
    queue: wiring.queue().queue,
    jobs: records.jobs,
    events: new MemoryEvents(),
    store,
    keys: records.keys,
    rateLimiter: new MemoryRateLimiter(),
    cache: new MemoryResponseCache(),
    usage: records.usage,
    config,
    logger,
    metrics: createMetrics(),
    models: createModelCatalog(store),
  }
}

let app: ReturnType<typeof createApp> | undefined
let ready: Promise<unknown> = Promise.resolve()

/** The app of this container, built on first use (tests may pass deps). */
export function lambdaApp(deps?: EdgeDeps): ReturnType<typeof createApp> {
  if (!app || deps) {
    const d = deps ?? createLambdaDeps(parseConfig({ PGPT_PROFILE: 'aws', ...process.env }))
    if (d.config.PGPT_API_KEY) ready = ensureKey(d.keys, d.config.PGPT_API_KEY)
    app = createApp({ ...d, usageBeforeResponse: true })
  }
  return app
}

type BufferedHandler = ReturnType<typeof handle>
type StreamingHandler = ReturnType<typeof streamHandle>

/** API Gateway (REST or HTTP API), ALB, function URL without streaming. */
export const handler = (async (
  event: Parameters<BufferedHandler>[0],
  context?: Parameters<BufferedHandler>[1],
) => {
  const a = lambdaApp()
  await ready
  return handle(a)(event, context)
}) as BufferedHandler

let streaming: StreamingHandler | undefined
/** Function URL with RESPONSE_STREAM invoke mode (SSE arrives as it is written). */
export const streamHandler = ((...args: Parameters<StreamingHandler>) => {
  streaming ??= streamHandle(lambdaApp())
  return ready.then(() => streaming!(...args))
}) as unknown as StreamingHandler
