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

/**
 * Requests without a valid API key, limited per client address: each 401
 * (missing, unknown or revoked key) takes one unit from the address's
 * bucket, and an address whose bucket is empty is answered 429 before its
 * key is looked up — a flood of guessed keys cannot keep the key store and
 * the CPU busy. Requests with a valid key never take from it, but a valid
 * key sent from an address that is being refused waits like the rest (its
 * key is not looked up). Only where the runtime names the client
 * (`clientAddress`; on Node the socket's peer, edge/node.ts): behind a
 * proxy that is the proxy, so there the proxy should limit instead.
 */
export interface UnauthenticatedLimit {
  /** Before the key is looked up: 429 when the address has no failures left. */
  check(c: AppContext): Promise<void>
  /** A request failed authentication: it takes one unit. */
  failed(c: AppContext): Promise<void>
}

export function unauthenticatedLimit(o: {
  limiter: RateLimiter
  metrics: EdgeMetrics
  /** Failed requests per minute per address (also the burst). */
  perMinute: number
  clientAddress: (c: AppContext) => string | undefined
}): UnauthenticatedLimit {
  if (o.perMinute < 1) throw new Error('unauthenticatedLimit: perMinute must be >= 1')
  const rule: RateLimitRule = { limit: o.perMinute, periodSeconds: 60 }
  const bucket = (c: AppContext) => {
    const a = o.clientAddress(c)
    return a ? `unauth:${a}` : undefined
  }
  return {
    async check(c) {
      const b = bucket(c)
      if (!b) return
      // Cost 0 only looks: the bucket holds fewer than one unit when this address has spent its failures.
      const d = await o.limiter.consume(b, 0, rule)
      if (d.remaining >= 1) return
      o.metrics.rateLimitRejections.inc({ limit: 'unauthenticated' })
      // One unit comes back an interval (period / limit) after the bucket was last full minus one.
      const retry = Math.max(1, d.resetSeconds - rule.periodSeconds + rule.periodSeconds / rule.limit)
      throw rateLimited(
        `Too many requests without a valid API key from this address: limit ${rule.limit} per minute. Try again in ${formatDuration(retry)}.`,
        retry,
      )
    },
    async failed(c) {
      const b = bucket(c)
      if (b) await o.limiter.consume(b, 1, rule)
    },
  }
}
