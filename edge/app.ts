/**
 * The edge: one Hono app, the public face of PrometheusGPT. It authenticates,
 * rate-limits, validates, caches and turns every generation into a job; it
 * never runs a model. Runtime-neutral (no Node-only imports), so the same app
 * serves on Node (edge/node.ts), Workers (edge/worker.ts) and Lambda
 * (functions/api.ts).
 *
 * Order of middleware: request id + child logger → metrics/log line → body
 * limit → (/v1/*) API key → rate limits → route (scope, validation, handler).
 */
import { OpenAPIHono } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { tooLarge } from '../core/errors.js'
import { fromZod } from '../core/openai/zod-error.js'
import type { AppEnv, EdgeDeps } from './deps.js'
import { notFoundHandler, onError } from './errors.js'
import { apiKeyAuth } from './middleware/auth/index.js'
import { observe } from './middleware/observe/index.js'
import { rateLimit, unauthenticatedLimit } from './middleware/rate-limit/index.js'
import { requestId } from './middleware/request-id/index.js'
import { registerAdminKeys } from './routes/admin-keys.js'
import { registerAdminModels } from './routes/admin-models.js'
import { registerBatches } from './routes/batches.js'
import { registerCompletions } from './routes/completions.js'
import { registerFiles } from './routes/files.js'
import { registerFineTuning } from './routes/fine-tuning.js'
import { registerInternal } from './routes/internal.js'
import { registerJobs } from './routes/jobs.js'
import { registerModels } from './routes/models.js'
import { registerSystem } from './routes/system.js'
import { registerUsage } from './routes/usage.js'
import type { RouteContext } from './routes/util.js'
import { registerWebhooks } from './routes/webhooks.js'

export type { EdgeDeps } from './deps.js'

/** Routes that enforce their own body limit: uploads, and the workers' events (edge/routes/internal.ts). */
const UPLOAD_ROUTES = new Set(['/v1/files', '/v1/admin/models', '/internal/events'])

export function createApp(deps: EdgeDeps) {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw fromZod(result.error, result.target)
    },
  })
  const limits = rateLimit({
    limiter: deps.rateLimiter,
    metrics: deps.metrics,
    requestsPerMinute: deps.config.PGPT_RATE_LIMIT_RPM,
    tokensPerMinute: deps.config.PGPT_RATE_LIMIT_TPM,
  })
  const ctx: RouteContext = { deps, tokens: limits.tokens }

  app.onError(onError)
  app.notFound(notFoundHandler)
  app.use('*', requestId({ logger: deps.logger }))
  app.use('*', observe(deps.metrics))
  // JSON bodies are small; the upload routes (files, model folders) and the workers' events
  // (/internal/events, PGPT_MAX_INTERNAL_BODY_BYTES) set their own, larger limits.
  const jsonLimit = bodyLimit({
    maxSize: deps.config.PGPT_MAX_BODY_BYTES,
    onError: () => {
      throw tooLarge(`The request body exceeds ${deps.config.PGPT_MAX_BODY_BYTES} bytes.`)
    },
  })
  app.use('*', (c, next) =>
    c.req.method === 'POST' && UPLOAD_ROUTES.has(c.req.path) ? next() : jsonLimit(c, next),
  )
  const unauthRpm = deps.config.PGPT_RATE_LIMIT_UNAUTH_RPM
  const unauthenticated =
    deps.clientAddress && unauthRpm > 0
      ? unauthenticatedLimit({
          limiter: deps.rateLimiter,
          metrics: deps.metrics,
          perMinute: unauthRpm,
          clientAddress: deps.clientAddress,
        })
      : undefined
  app.use('/v1/*', apiKeyAuth({ keys: deps.keys, ...(unauthenticated ? { unauthenticated } : {}) }))
  app.use('/v1/*', limits.middleware)

  registerSystem(app, ctx)
  registerInternal(app, ctx)
  registerModels(app, ctx)
  registerCompletions(app, ctx)
  registerJobs(app, ctx)
  registerFineTuning(app, ctx)
  registerFiles(app, ctx)
  registerBatches(app, ctx)
  registerAdminKeys(app, ctx)
  registerAdminModels(app, ctx)
  registerUsage(app, ctx)
  registerWebhooks(app, ctx)
  return app
}

export type EdgeAppType = ReturnType<typeof createApp>
