/**
 * Request ids: the caller's `x-request-id` when it is safe to echo and log
 * (`^[A-Za-z0-9._:-]{1,128}$`), otherwise a new `req_…` id. Set on every
 * response, stored on job records and queue messages, and bound to a pino
 * child logger for the request.
 */
import type { MiddlewareHandler } from 'hono'
import { newId } from '../../../core/ids.js'
import type { Logger } from '../../../core/logger.js'
import type { AppEnv } from '../../deps.js'

export const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface RequestIdOptions {
  logger: Logger
  header?: string
}

export const requestId = (o: RequestIdOptions): MiddlewareHandler<AppEnv> => {
  const header = (o.header ?? 'x-request-id').toLowerCase()
  return async function requestId(c, next) {
    const given = c.req.header(header)
    const id = given && SAFE_REQUEST_ID.test(given) ? given : newId('req')
    c.set('requestId', id)
    c.set('startedAt', performance.now())
    c.set('log', o.logger.child({ requestId: id }))
    c.header(header, id)
    await next()
    c.res.headers.set(header, id)
  }
}
