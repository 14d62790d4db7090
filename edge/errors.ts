/**
 * Errors in OpenAI's shape. Everything thrown reaches `onError`: ApiError as
 * is, hono's HTTPException (malformed JSON, body limit) by status, anything
 * else as a 500 that leaks nothing. A zod failure becomes a 400 naming the
 * field (core/openai/zod-error.ts).
 */
import type { ErrorHandler, NotFoundHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { ApiError, toApiError } from '../core/errors.js'
import type { AppEnv } from './deps.js'

export const onError: ErrorHandler<AppEnv> = (err, c) => {
  let api: ApiError
  if (err instanceof HTTPException) {
    if (err.status === 415)
      api = new ApiError(415, 'Send the body as JSON with Content-Type: application/json.', {
        code: 'unsupported_media_type',
      })
    else if (err.status === 400 && /JSON/i.test(err.message))
      api = new ApiError(400, 'We could not parse the JSON body of your request.', { code: 'invalid_json' })
    else api = new ApiError(err.status, err.message || 'Bad request.')
  } else api = toApiError(err)
  if (api.status >= 500) c.get('log')?.error({ err: api.cause ?? err }, 'request failed')
  for (const [k, v] of Object.entries(api.headers)) c.header(k, v)
  return c.json(api.toJSON(), api.status as 400)
}

export const notFoundHandler: NotFoundHandler<AppEnv> = (c) => {
  const api = new ApiError(404, `Unknown request URL: ${c.req.method} ${new URL(c.req.url).pathname}.`, {
    code: 'unknown_url',
  })
  return c.json(api.toJSON(), 404)
}
