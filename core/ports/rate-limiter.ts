/**
 * RateLimiter port: GCRA (a token bucket expressed as one timestamp per key).
 * `limit` units per `periodSeconds`, bursting up to `limit`. Requests per minute
 * consume 1; tokens per minute consume the request's token estimate.
 * Decisions must be exact under concurrency on one instance.
 */

export interface RateLimitRule {
  /** Units allowed per period (also the burst). */
  limit: number
  periodSeconds: number
}

export interface RateLimitDecision {
  allowed: boolean
  limit: number
  /** Units still available right now after this decision. */
  remaining: number
  /** Seconds until the bucket is full again. */
  resetSeconds: number
  /** When denied: seconds until `cost` units would be allowed. */
  retryAfterSeconds: number
}

export interface RateLimiter {
  readonly name: string
  /** Take `cost` units from `key`'s bucket, or deny without taking any. */
  consume(key: string, cost: number, rule: RateLimitRule): Promise<RateLimitDecision>
  /** Return units (e.g. tokens estimated but not used). Optional. */
  refund?(key: string, cost: number, rule: RateLimitRule): Promise<void>
}
