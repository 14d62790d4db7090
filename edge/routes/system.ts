/** GET /health, GET /ready, GET /metrics, GET /openapi.json and GET /docs. */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError, unauthorized } from '../../core/errors.js'
import { docsPage } from '../docs-page.js'
import { sha256Hex, timingSafeEqualString } from '../keys.js'
import { bearerToken, noKey } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext } from './util.js'

export const API_VERSION = '0.1.0'

const health = createRoute({
  method: 'get',
  path: '/health',
  tags: ['System'],
  summary: 'Liveness: the process answers',
  ...noKey,
  responses: {
    200: {
      description: 'Alive.',
      content: { 'application/json': { schema: z.object({ status: z.literal('ok') }) } },
    },
  },
})

const checks = z.record(z.string(), z.string()).openapi({
  description: "Each dependency's state: 'ok', or 'error: <why>'.",
  example: { queue: 'ok', store: 'ok', jobs: 'ok', keys: 'ok', model: 'ok' },
})
const ready = createRoute({
  method: 'get',
  path: '/ready',
  tags: ['System'],
  summary: 'Readiness: the queue and the store answer, and the default model is published',
  ...noKey,
  description:
    'For load balancers and Kubernetes readinessProbe (GET /health is liveness). 200 once the queue, the ' +
    'object store, the job records and the keys answer and the catalog holds the default model ' +
    '(PGPT_DEFAULT_MODEL; prometheus-mini in the local profile; unset: any model). Otherwise 503, with the ' +
    "reasons in OpenAI's error shape beside the checks.",
  responses: {
    200: {
      description: 'Ready.',
      content: { 'application/json': { schema: z.object({ status: z.literal('ready'), checks }) } },
    },
    503: {
      description: 'Not ready: `error.message` says why (code `not_ready`).',
      content: {
        'application/json': {
          schema: z.object({
            status: z.literal('not_ready'),
            checks,
            error: z.object({
              message: z.string(),
              type: z.literal('service_unavailable'),
              param: z.null(),
              code: z.literal('not_ready'),
            }),
          }),
        },
      },
    },
  },
})

/** A reason /ready may show as it is (no internals in it). */
class NotReady extends Error {}

const within = <T>(p: Promise<T>, ms: number) =>
  Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new NotReady(`no answer in ${ms} ms`)), ms)),
  ])

export function registerSystem(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    health,
    h((c) => json(c, { status: 'ok' })),
  )
  app.openapi(
    ready,
    h(async (c) => {
      const probes: Record<string, () => Promise<unknown>> = {
        queue: () => deps.queue.stats(),
        store: () => deps.store.list('models/', { limit: 1 }),
        jobs: () => deps.jobs.getById('job_readiness_probe'),
        keys: () => deps.keys.get('key_readiness_probe'),
        // Requests need a model: not ready until the default one (or, with none configured, any) is listed.
        // The catalog re-reads on every publish, whichever process made it (core/records/model-catalog.ts).
        model: async () => {
          const models = await deps.models.all()
          const wanted = deps.config.PGPT_DEFAULT_MODEL
          // Unauthenticated: name no model but the configured one (tenants' model ids are theirs).
          if (wanted && !models.some((m) => m.id === wanted))
            throw new NotReady(`the default model '${wanted}' (PGPT_DEFAULT_MODEL) is not published yet`)
          if (!models.length) throw new NotReady('no model is published yet (pgpt model publish)')
        },
      }
      const results: Record<string, string> = {}
      await Promise.all(
        Object.entries(probes).map(async ([name, probe]) => {
          try {
            await within(probe(), 2000)
            results[name] = 'ok'
          } catch (err) {
            // An adapter's message can carry file paths or hosts: this route is public, so the
            // reason stays in the log with the request id, and the answer says where to look.
            if (err instanceof NotReady) results[name] = `error: ${err.message}`
            else {
              c.get('log').warn({ err, check: name }, 'readiness check failed')
              results[name] = `error: unavailable (the edge's log has why: request id ${c.get('requestId')})`
            }
          }
        }),
      )
      const failing = Object.entries(results).filter(([, v]) => v !== 'ok')
      if (!failing.length) return json(c, { status: 'ready', checks: results })
      const why = failing.map(([name, v]) => `${name}: ${v.replace(/^error: /, '')}`).join('; ')
      const error = new ApiError(503, `Not ready: ${why}.`, { code: 'not_ready' })
      return json(c, { status: 'not_ready', checks: results, ...error.toJSON() }, 503)
    }),
  )

  const metricsToken = deps.config.PGPT_METRICS_TOKEN ? sha256Hex(deps.config.PGPT_METRICS_TOKEN) : null
  app.get('/metrics', async (c) => {
    if (metricsToken) {
      const given = bearerToken(c.req.header('authorization'))
      if (!given || !timingSafeEqualString(await sha256Hex(given), await metricsToken))
        throw unauthorized('A valid metrics token is required.', 'invalid_metrics_token')
    }
    return c.body(await deps.metrics.registry.metrics(), 200, {
      'content-type': deps.metrics.registry.contentType,
    })
  })

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API key: `Authorization: Bearer pgpt_…`.',
  })
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'PrometheusGPT API',
      version: API_VERSION,
      description:
        'OpenAI-compatible API for small GPT models. Errors use OpenAI’s shape `{error:{message,type,param,code}}`; ' +
        'authenticated responses carry x-ratelimit-* headers, every response x-request-id.',
    },
    tags: [
      { name: 'Models' },
      { name: 'Generation' },
      { name: 'Jobs' },
      { name: 'Admin' },
      { name: 'System' },
    ],
  })
  app.get('/docs', (c) => c.html(docsPage('/openapi.json')))
}
