import { describe, expect, it } from 'vitest'
import { MemoryRateLimiter } from '../../../core/adapters/memory-rate-limiter.js'
import { createMetrics } from '../../../core/metrics.js'
import { formatDuration, rateLimit } from './index.js'

describe('formatDuration (OpenAI style)', () => {
  it.each([
    [0, '0ms'],
    [0.0201, '21ms'],
    [1, '1s'],
    [1.5, '1.5s'],
    [59.9999, '60s'],
    [360, '6m0s'],
    [61.4, '1m1s'],
    [Number.POSITIVE_INFINITY, '0s'],
  ])('%s s → %s', (s, want) => {
    expect(formatDuration(s)).toBe(want)
  })
})

describe('rateLimit factory', () => {
  it('rejects limits below 1 at construction', () => {
    const o = { limiter: new MemoryRateLimiter(), metrics: createMetrics() }
    expect(() => rateLimit({ ...o, requestsPerMinute: 0, tokensPerMinute: 10 })).toThrow(/>= 1/)
    expect(() => rateLimit({ ...o, requestsPerMinute: 10, tokensPerMinute: 0 })).toThrow(/>= 1/)
  })
})
