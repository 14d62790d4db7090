/**
 * Contract suite for the RateLimiter port (GCRA semantics). Every adapter's
 * test calls `testRateLimiter({ name, make })`; nothing is skipped.
 */
import { describe, expect, it } from 'vitest'
import type { RateLimiter } from '../../core/ports/rate-limiter.js'

export interface RateLimiterContractOptions {
  name: string
  make: () => Promise<{ limiter: RateLimiter; cleanup?: () => Promise<void> }>
}

let n = 0
const uniq = (p: string) => `${p}:${Date.now()}:${++n}`

export function testRateLimiter({ name, make }: RateLimiterContractOptions) {
  describe(`RateLimiter contract: ${name}`, () => {
    const withLimiter = (fn: (l: RateLimiter) => Promise<void>) => async () => {
      const { limiter, cleanup } = await make()
      try {
        await fn(limiter)
      } finally {
        await cleanup?.()
      }
    }

    it(
      'allows a burst of `limit`, counts remaining down, then denies with a retry-after',
      withLimiter(async (l) => {
        const key = uniq('burst')
        const rule = { limit: 5, periodSeconds: 60 }
        const remaining: number[] = []
        for (let i = 0; i < 5; i++) {
          const d = await l.consume(key, 1, rule)
          expect(d.allowed).toBe(true)
          expect(d.limit).toBe(5)
          remaining.push(d.remaining)
        }
        expect(remaining).toEqual([4, 3, 2, 1, 0])
        const denied = await l.consume(key, 1, rule)
        expect(denied.allowed).toBe(false)
        expect(denied.remaining).toBe(0)
        // One unit comes back every 12 s.
        expect(denied.retryAfterSeconds).toBeGreaterThan(10)
        expect(denied.retryAfterSeconds).toBeLessThanOrEqual(12)
        expect(denied.resetSeconds).toBeGreaterThan(58)
        expect(denied.resetSeconds).toBeLessThanOrEqual(60)
      }),
    )

    it(
      'weights by cost and a denial takes nothing',
      withLimiter(async (l) => {
        const key = uniq('cost')
        const rule = { limit: 100, periodSeconds: 60 }
        expect((await l.consume(key, 70, rule)).remaining).toBe(30)
        const denied = await l.consume(key, 40, rule)
        expect(denied.allowed).toBe(false)
        const ok = await l.consume(key, 30, rule)
        expect(ok.allowed).toBe(true)
        expect(ok.remaining).toBe(0)
      }),
    )

    it(
      'a cost of 0 peeks without taking',
      withLimiter(async (l) => {
        const key = uniq('peek')
        const rule = { limit: 10, periodSeconds: 60 }
        await l.consume(key, 4, rule)
        const peek = await l.consume(key, 0, rule)
        expect(peek.allowed).toBe(true)
        expect(peek.remaining).toBe(6)
        expect((await l.consume(key, 0, rule)).remaining).toBe(6)
      }),
    )

    it(
      'a cost above the limit is never allowed',
      withLimiter(async (l) => {
        const d = await l.consume(uniq('huge'), 11, { limit: 10, periodSeconds: 60 })
        expect(d.allowed).toBe(false)
        expect(d.retryAfterSeconds).toBeGreaterThan(0)
      }),
    )

    it(
      'keys are independent',
      withLimiter(async (l) => {
        const rule = { limit: 1, periodSeconds: 60 }
        const a = uniq('a')
        const b = uniq('b')
        expect((await l.consume(a, 1, rule)).allowed).toBe(true)
        expect((await l.consume(a, 1, rule)).allowed).toBe(false)
        expect((await l.consume(b, 1, rule)).allowed).toBe(true)
      }),
    )

    it(
      'refills with time',
      withLimiter(async (l) => {
        const key = uniq('refill')
        // One unit per second: slow enough for adapters behind a network hop on a busy machine.
        const rule = { limit: 3, periodSeconds: 3 }
        for (let i = 0; i < 3; i++) expect((await l.consume(key, 1, rule)).allowed).toBe(true)
        expect((await l.consume(key, 1, rule)).allowed).toBe(false)
        await new Promise((r) => setTimeout(r, 2050))
        const d = await l.consume(key, 2, rule)
        expect(d.allowed).toBe(true)
      }),
    )

    it(
      'is exact under concurrent calls: 60 at once against a limit of 20 admit exactly 20',
      withLimiter(async (l) => {
        const key = uniq('conc')
        const rule = { limit: 20, periodSeconds: 3600 }
        const all = await Promise.all(Array.from({ length: 60 }, () => l.consume(key, 1, rule)))
        expect(all.filter((d) => d.allowed)).toHaveLength(20)
        expect(
          all
            .filter((d) => d.allowed)
            .map((d) => d.remaining)
            .sort((x, y) => x - y),
        ).toEqual(Array.from({ length: 20 }, (_, i) => i))
      }),
    )

    it(
      'refund gives units back when the adapter supports it',
      withLimiter(async (l) => {
        expect(typeof l.refund).toBe('function')
        const key = uniq('refund')
        const rule = { limit: 10, periodSeconds: 3600 }
        await l.consume(key, 10, rule)
        expect((await l.consume(key, 1, rule)).allowed).toBe(false)
        await l.refund!(key, 4, rule)
        const d = await l.consume(key, 4, rule)
        expect(d.allowed).toBe(true)
        expect(d.remaining).toBe(0)
      }),
    )
  })
}
