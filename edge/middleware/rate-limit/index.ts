/**
 * Per-key rate limits: requests per minute (1 per request, taken here) and
 * tokens per minute (the request's estimate, taken by the generation handlers
 * through `takeTokens`). Every authenticated response carries OpenAI's
 * headers: x-ratelimit-{limit,remaining,reset}-{requests,tokens}.
 */
import type { MiddlewareHandler } from 'hono'
import { rateLimited } from '../../../core/errors.js'
import type { ApiKeyRecord } from '../../../core/ports/key-store.js'
import type { RateLimitDecision, RateLimiter, RateLimitRule } from '../../../core/ports/rate-limiter.js'
import type { AppContext, AppEnv, EdgeMetrics } from '../../deps.js'

export interface RateLimitOptions {
  limiter: RateLimiter
  metrics: EdgeMetrics
  /** Defaults when a key has no override. */
  requestsPerMinute: number
  tokensPerMinute: number
}

/** OpenAI's duration style: `20ms`, `1.5s`, `6m0s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '0s'
  if (seconds < 1) return `${Math.max(0, Math.ceil(seconds * 1000))}ms`
  if (seconds < 60) return `${Math.round(seconds * 1000) / 1000}s`
  const m = Math.floor(seconds / 60)
  return `${m}m${Math.round(seconds - m * 60)}s`
}

export function setHeaders(c: AppContext, kind: 'requests' | 'tokens', d: RateLimitDecision): void {
  c.header(`x-ratelimit-limit-${kind}`, String(d.limit))
  c.header(`x-ratelimit-remaining-${kind}`, String(d.remaining))
  c.header(`x-ratelimit-reset-${kind}`, formatDuration(d.resetSeconds))
}

const rules = (o: RateLimitOptions, key: ApiKeyRecord) => ({
  requests: {
    limit: key.limits?.requestsPerMinute ?? o.requestsPerMinute,
    periodSeconds: 60,
  } as RateLimitRule,
  tokens: { limit: key.limits?.tokensPerMinute ?? o.tokensPerMinute, periodSeconds: 60 } as RateLimitRule,
})

export interface TokenLimiter {
  /** Take `cost` tokens or throw 429. Returns a refund function for unused tokens. */
  take(c: AppContext, cost: number): Promise<(used: number) => Promise<void>>
}

export const rateLimit = (
  o: RateLimitOptions,
): { middleware: MiddlewareHandler<AppEnv>; tokens: TokenLimiter } => {
  if (o.requestsPerMinute < 1 || o.tokensPerMinute < 1) throw new Error('rateLimit: limits must be >= 1')
  const middleware: MiddlewareHandler<AppEnv> = async function rateLimit(c, next) {
    const key = c.get('key')
    const r = rules(o, key)
    // The token bucket is only peeked (cost 0) here, for the headers.
    const [req, tok] = await Promise.all([
      o.limiter.consume(`rpm:${key.id}`, 1, r.requests),
      o.limiter.consume(`tpm:${key.id}`, 0, r.tokens),
    ])
    setHeaders(c, 'requests', req)
    setHeaders(c, 'tokens', tok)
    if (!req.allowed) {
      o.metrics.rateLimitRejections.inc({ limit: 'requests' })
      throw rateLimited(
        `Rate limit reached for requests per minute: limit ${req.limit}. Try again in ${formatDuration(req.retryAfterSeconds)}.`,
        req.retryAfterSeconds,
      )
    }
    await next()
  }
  const tokens: TokenLimiter = {
    async take(c, cost) {
      const key = c.get('key')
      const rule = rules(o, key).tokens
      const d = await o.limiter.consume(`tpm:${key.id}`, cost, rule)
      setHeaders(c, 'tokens', d)
      if (!d.allowed) {
        o.metrics.rateLimitRejections.inc({ limit: 'tokens' })
        if (cost > rule.limit)
          throw rateLimited(
            `Request too large: it needs ${cost} tokens, above the limit of ${rule.limit} tokens per minute.`,
            60,
            'tokens_exceeded',
          )
        throw rateLimited(
          `Rate limit reached for tokens per minute: limit ${d.limit}, requested ${cost}. Try again in ${formatDuration(d.retryAfterSeconds)}.`,
          d.retryAfterSeconds,
          'rate_limit_exceeded',
        )
      }
      return async (used: number) => {
        const unused = cost - used
        if (unused > 0 && o.limiter.refund) await o.limiter.refund(`tpm:${key.id}`, unused, rule)
      }
    },
  }
  return { middleware, tokens }
}
