/**
 * Request metrics and one log line per request: route pattern, method,
 * status, model. The model label is a known model's id, `unknown` for a
 * request whose model was not found, or empty: the handlers set it
 * (edge/generation/respond.ts), never from the request's own string, so the
 * label values stay as few as the models. Streaming handlers set `streaming` and observe their own
 * latency when the last byte is written.
 */
import type { MiddlewareHandler } from 'hono'
import type { AppEnv, EdgeMetrics } from '../../deps.js'

export const observe = (metrics: EdgeMetrics): MiddlewareHandler<AppEnv> =>
  async function observe(c, next) {
    await next()
    // An unknown URL (404 with only middleware patterns matched) is labelled once, not per path;
    // a request stopped by middleware (401, 429) keeps that middleware's pattern, e.g. /v1/*.
    const route = c.res.status === 404 && c.req.routePath.endsWith('*') ? 'unmatched' : c.req.routePath
    const status = String(c.res.status)
    const method = c.req.method
    metrics.requests.inc({ route, method, status, model: c.get('model') ?? '' })
    const seconds = (performance.now() - c.get('startedAt')) / 1000
    if (!c.get('streaming')) metrics.requestLatency.observe({ route, method, status }, seconds)
    const log = c.get('log')
    const line = { method, route, status: c.res.status, ms: Math.round(seconds * 1000) }
    if (c.res.status >= 500) log.error(line, 'request')
    else log.info(line, 'request')
  }
