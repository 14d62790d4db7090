import { describe, expect, it } from 'vitest'
import { testRateLimiter } from '../../test/contracts/rate-limiter.js'
import { gcra, MemoryRateLimiter } from './memory-rate-limiter.js'

testRateLimiter({ name: 'memory', make: async () => ({ limiter: new MemoryRateLimiter() }) })

describe('MemoryRateLimiter with an injected clock', () => {
  it('admits one unit per emission interval once the burst is spent', async () => {
    let now = 1_000_000
    const l = new MemoryRateLimiter({ now: () => now })
    const rule = { limit: 60, periodSeconds: 60 } // one per second
    for (let i = 0; i < 60; i++) await l.consume('k', 1, rule)
    expect((await l.consume('k', 1, rule)).allowed).toBe(false)
    now += 999
    expect((await l.consume('k', 1, rule)).allowed).toBe(false)
    now += 1
    expect((await l.consume('k', 1, rule)).allowed).toBe(true)
    expect((await l.consume('k', 1, rule)).retryAfterSeconds).toBeCloseTo(1, 5)
  })

  it('rejects bad rules and costs', () => {
    expect(() => gcra(undefined, 0, 1, { limit: 0, periodSeconds: 60 })).toThrow(/limit/)
    expect(() => gcra(undefined, 0, -1, { limit: 1, periodSeconds: 60 })).toThrow(/cost/)
  })

  it('sweeps idle keys beyond maxKeys', async () => {
    let now = 0
    const l = new MemoryRateLimiter({ now: () => now, maxKeys: 2 })
    const rule = { limit: 1, periodSeconds: 1 }
    await l.consume('a', 1, rule)
    await l.consume('b', 1, rule)
    now += 5000
    await l.consume('c', 1, rule) // triggers a sweep of a and b
    expect((await l.consume('a', 1, rule)).remaining).toBe(0)
  })
})
