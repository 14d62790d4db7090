import { describe, expect, it } from 'vitest'
import { ApiError, badRequest, notFound, rateLimited, toApiError, typeForStatus } from './errors.js'

describe('ApiError', () => {
  it('renders as the OpenAI error object', () => {
    const e = badRequest("'max_tokens' must be at least 1", 'max_tokens', 'invalid_value')
    expect(e.status).toBe(400)
    expect(e.toJSON()).toEqual({
      error: {
        message: "'max_tokens' must be at least 1",
        type: 'invalid_request_error',
        param: 'max_tokens',
        code: 'invalid_value',
      },
    })
  })

  it.each([
    [400, 'invalid_request_error'],
    [401, 'authentication_error'],
    [403, 'permission_error'],
    [404, 'not_found_error'],
    [413, 'invalid_request_error'],
    [422, 'invalid_request_error'],
    [429, 'rate_limit_error'],
    [500, 'server_error'],
    [503, 'service_unavailable'],
  ])('maps status %i to type %s', (status, type) => {
    expect(typeForStatus(status)).toBe(type)
    expect(new ApiError(status, 'x').type).toBe(type)
  })

  it('carries Retry-After on 429, rounded up to whole seconds', () => {
    expect(rateLimited('slow down', 1.2).headers['retry-after']).toBe('2')
    expect(rateLimited('slow down', 0).headers['retry-after']).toBe('1')
  })

  it('names the missing resource', () => {
    expect(notFound('job', 'job_1').toJSON().error).toMatchObject({
      code: 'job_not_found',
      type: 'not_found_error',
    })
  })

  it('hides internals of unknown errors behind a 500', () => {
    const e = toApiError(new Error('db password is hunter2'))
    expect(e.status).toBe(500)
    expect(e.message).not.toContain('hunter2')
    expect((e.cause as Error).message).toContain('hunter2')
  })
})
