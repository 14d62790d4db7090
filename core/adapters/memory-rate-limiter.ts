/**
 * In-memory RateLimiter: GCRA (generic cell rate algorithm), one "theoretical
 * arrival time" (TAT) per key. The local profile's default and the reference
 * the Durable Object adapter copies (edge/adapters/durable-object-rate-limiter.ts).
 *
 *   T   = period / limit          emission interval: time one unit "costs"
 *   tat = max(stored, now)
 *   new = tat + cost·T            allowed when new − period ≤ now (burst = limit)
 *
 * Every decision runs synchronously between two awaits, so concurrent calls on
 * one instance are exact. Reference: https://brandur.org/rate-limiting
 */
import type { RateLimitDecision, RateLimiter, RateLimitRule } from '../ports/rate-limiter.js'

export const MEMORY_RATE_LIMITER = 'memory'

export interface MemoryRateLimiterOptions {
  /** Clock in epoch ms; tests may inject one. Default Date.now. */
  now?: () => number
  /** Sweep idle keys when more than this many are held. Default 10 000. */
  maxKeys?: number
}

/** The pure GCRA step, shared with the Durable Object adapter. */
export function gcra(
  stored: number | undefined,
  now: number,
  cost: number,
  rule: RateLimitRule,
): { decision: RateLimitDecision; tat: number | undefined } {
  if (!(rule.limit >= 1) || !(rule.periodSeconds > 0))
    throw new Error('gcra: limit must be >= 1 and period > 0')
  if (!(cost >= 0)) throw new Error('gcra: cost must be >= 0')
  const period = rule.periodSeconds * 1000
  const interval = period / rule.limit
  const tat = Math.max(stored ?? now, now)
  const next = tat + cost * interval
  const allowAt = next - period
  const remainingAt = (t: number) => Math.max(0, Math.floor((period - (t - now)) / interval + 1e-9))
  if (allowAt > now + 1e-6) {
    return {
      tat: stored,
      decision: {
        allowed: false,
        limit: rule.limit,
        remaining: remainingAt(tat),
        resetSeconds: (tat - now) / 1000,
        retryAfterSeconds: cost > rule.limit ? Number.POSITIVE_INFINITY : (allowAt - now) / 1000,
      },
    }
  }
  return {
    tat: next,
    decision: {
      allowed: true,
      limit: rule.limit,
      remaining: remainingAt(next),
      resetSeconds: (next - now) / 1000,
      retryAfterSeconds: 0,
    },
  }
}

/** Give back `cost` units: the TAT moves back, never before now. */
export function gcraRefund(
  stored: number | undefined,
  now: number,
  cost: number,
  rule: RateLimitRule,
): number | undefined {
  if (stored === undefined) return undefined
  const interval = (rule.periodSeconds * 1000) / rule.limit
  const tat = stored - cost * interval
  return tat <= now ? undefined : tat
}

export class MemoryRateLimiter implements RateLimiter {
  readonly name = MEMORY_RATE_LIMITER
  private readonly tats = new Map<string, number>()
  private readonly now: () => number
  private readonly maxKeys: number

  constructor(options: MemoryRateLimiterOptions = {}) {
    this.now = options.now ?? Date.now
    this.maxKeys = options.maxKeys ?? 10_000
    if (this.maxKeys < 1) throw new Error('MemoryRateLimiter: maxKeys must be >= 1')
  }

  async consume(key: string, cost: number, rule: RateLimitRule): Promise<RateLimitDecision> {
    const now = this.now()
    const { decision, tat } = gcra(this.tats.get(key), now, cost, rule)
    if (tat !== undefined) this.tats.set(key, tat)
    if (this.tats.size > this.maxKeys) this.sweep(now)
    return decision
  }

  async refund(key: string, cost: number, rule: RateLimitRule): Promise<void> {
    const tat = gcraRefund(this.tats.get(key), this.now(), cost, rule)
    if (tat === undefined) this.tats.delete(key)
    else this.tats.set(key, tat)
  }

  /** Keys whose bucket is full again carry no state. */
  private sweep(now: number): void {
    for (const [k, tat] of this.tats) if (tat <= now) this.tats.delete(k)
  }
}
