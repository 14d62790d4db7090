import { describe, expect, it } from 'vitest'
import { backoffDelay, sleep } from './backoff.js'

describe('backoffDelay', () => {
  const o = { base: 2, max: 60 }
  it.each([
    [1, 1, 2],
    [2, 2, 4],
    [3, 4, 8],
    [6, 30, 60],
    [20, 30, 60],
  ])('attempt %i lies in [%i, %i] (equal jitter, capped)', (attempt, lo, hi) => {
    expect(backoffDelay(attempt, o, () => 0)).toBe(lo)
    expect(backoffDelay(attempt, o, () => 0.999999)).toBeCloseTo(hi, 3)
    const r = backoffDelay(attempt, o)
    expect(r).toBeGreaterThanOrEqual(lo)
    expect(r).toBeLessThanOrEqual(hi)
  })

  it('base 0 means no wait (tests)', () => {
    expect(backoffDelay(5, { base: 0, max: 0 })).toBe(0)
  })
})

describe('sleep', () => {
  it('ends early, without throwing, when the signal aborts', async () => {
    const ctrl = new AbortController()
    const t0 = Date.now()
    setTimeout(() => ctrl.abort(), 20)
    await sleep(5000, ctrl.signal)
    expect(Date.now() - t0).toBeLessThan(1000)
  })
})
