/** GET /health, GET /ready, GET /metrics, GET /openapi.json and GET /docs. */
import { createRoute, z } from '@hono/zod-openapi'
import { unauthorized } from '../../core/errors.js'
import { docsPage } from '../docs-page.js'
import { sha256Hex, timingSafeEqualString } from '../keys.js'
import { bearerToken } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext } from './util.js'

export const API_VERSION = '0.1.0'

const health = createRoute({
  method: 'get',
  path: '/health',
  tags: ['System'],
  summary: 'Liveness: the process answers',
  responses: {
    200: {
      description: 'Alive.',
      content: { 'application/json': { schema: z.object({ status: z.literal('ok') }) } },
    },
  },
})

const checks = z.record(z.string(), z.string())
const ready = createRoute({
  method: 'get',
  path: '/ready',
  tags: ['System'],
  summary: 'Readiness: the queue and the store answer',
  responses: {
    200: {
      description: 'Ready.',
      content: { 'application/json': { schema: z.object({ status: z.literal('ready'), checks }) } },
    },
    503: {
      description: 'Not ready.',
      content: { 'application/json': { schema: z.object({ status: z.literal('not_ready'), checks }) } },
    },
  },
})

const within = <T>(p: Promise<T>, ms: number) =>
  Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms)),
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
      }
      const results: Record<string, string> = {}
      await Promise.all(
        Object.entries(probes).map(async ([name, probe]) => {
          try {
            await within(probe(), 2000)
            results[name] = 'ok'
          } catch (err) {
            results[name] = `error: ${(err as Error).message}`
          }
        }),
      )
      const ok = Object.values(results).every((v) => v === 'ok')
      return json(c, { status: ok ? 'ready' : 'not_ready', checks: results }, ok ? 200 : 503)
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
