/** Small helpers shared by the route files. */
import type { OpenAPIHono } from '@hono/zod-openapi'
import type { AppContext, AppEnv, EdgeDeps } from '../deps.js'
import type { TokenLimiter } from '../middleware/rate-limit/index.js'

export type EdgeApp = OpenAPIHono<AppEnv>

export interface RouteContext {
  deps: EdgeDeps
  tokens: TokenLimiter
}

/**
 * Route handlers here return plain Responses (JSON, SSE); the route's schemas
 * document them. This adapts such a handler to app.openapi's typed signature.
 */
export const h = (fn: (c: AppContext) => Promise<Response> | Response) => fn as never

/** The validated part of the request (validated by the route's schema before the handler runs). */
export const valid = <T>(c: AppContext, target: 'json' | 'query' | 'param' | 'header'): T =>
  c.req.valid(target as never) as T

export const security = [{ bearerAuth: [] }]

export const json = (c: AppContext, body: unknown, status = 200) =>
  c.body(JSON.stringify(body), status as 200, { 'content-type': 'application/json' })
