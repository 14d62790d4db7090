/**
 * One error type for the whole product. It renders as OpenAI's error object
 * `{ error: { message, type, param, code } }` so the official SDKs raise their
 * typed errors (BadRequestError, AuthenticationError, RateLimitError, ...).
 */

/** OpenAI's `error.type` values, chosen by HTTP status. */
export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable'

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null }
}

export interface ApiErrorOptions {
  type?: ApiErrorType
  param?: string | null
  code?: string | null
  /** Extra response headers, e.g. Retry-After for 429. */
  headers?: Record<string, string>
  cause?: unknown
}

export class ApiError extends Error {
  override readonly name = 'ApiError'
  readonly status: number
  readonly type: ApiErrorType
  readonly param: string | null
  readonly code: string | null
  readonly headers: Record<string, string>

  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(message, { cause: options.cause })
    this.status = status
    this.type = options.type ?? typeForStatus(status)
    this.param = options.param ?? null
    this.code = options.code ?? null
    this.headers = options.headers ?? {}
  }

  toJSON(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } }
  }
}

export function typeForStatus(status: number): ApiErrorType {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 404) return 'not_found_error'
  if (status === 429) return 'rate_limit_error'
  if (status === 503) return 'service_unavailable'
  if (status >= 500) return 'server_error'
  return 'invalid_request_error'
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, { param, code })
export const unauthorized = (message = 'Missing or invalid API key.', code = 'invalid_api_key') =>
  new ApiError(401, message, { code })
export const forbidden = (message: string, code: string | null = 'insufficient_scope') =>
  new ApiError(403, message, { code })
export const notFound = (what: string, id: string, param: string | null = null) =>
  new ApiError(404, `No ${what} found with id '${id}'.`, {
    param,
    code: `${what.replace(/\s+/g, '_')}_not_found`,
  })
export const tooLarge = (message: string) => new ApiError(413, message, { code: 'payload_too_large' })
export const unprocessable = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(422, message, { param, code })
export const rateLimited = (message: string, retryAfterSeconds: number, code = 'rate_limit_exceeded') =>
  new ApiError(429, message, {
    code,
    headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) },
  })

/** Wraps anything thrown into an ApiError; unknown errors become a 500 without leaking internals. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err
  return new ApiError(500, 'The server had an error while processing your request.', {
    code: 'internal_error',
    cause: err,
  })
}
