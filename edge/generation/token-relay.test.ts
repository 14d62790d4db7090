import { describe, expect, it } from 'vitest'
import { TokenRelay } from './token-relay.js'

describe('TokenRelay', () => {
  it('passes one run’s tokens through', () => {
    const r = new TokenRelay('job_1')
    expect(['a', 'b', 'c'].map((t) => r.next(1, 0, t))).toEqual(['a', 'b', 'c'])
    expect(r.shortfall()).toBeUndefined()
  })

  it('skips what a rerun repeats, per choice, and continues after it', () => {
    const r = new TokenRelay('job_1')
    expect([r.next(1, 0, 'Once'), r.next(1, 1, 'The'), r.next(1, 0, ' upon')]).toEqual([
      'Once',
      'The',
      ' upon',
    ])
    // Run 2 from the start: choice 0 repeats two pieces (split differently), choice 1 one.
    expect(r.next(2, 0, 'On')).toBe('')
    expect(r.next(2, 1, 'The')).toBe('')
    expect(r.next(2, 0, 'ce up')).toBe('')
    expect(r.next(2, 0, 'on a')).toBe(' a')
    expect(r.next(2, 1, ' end')).toBe(' end')
    expect(r.next(2, 0, ' time')).toBe(' time')
    expect(r.shortfall()).toBeUndefined()
  })

  it('refuses a rerun that differs from what was sent, or ends short of it', () => {
    const diverged = new TokenRelay('job_1')
    diverged.next(1, 0, 'Once')
    diverged.next(1, 0, ' upon')
    expect(diverged.next(2, 0, 'Once')).toBe('')
    expect(() => diverged.next(2, 0, ' there')).toThrow(
      expect.objectContaining({ status: 502, code: 'job_rerun_diverged' }),
    )
    const short = new TokenRelay('job_1')
    short.next(1, 0, 'Once')
    short.next(1, 0, ' upon')
    short.next(2, 0, 'Once')
    expect(short.shortfall()).toMatchObject({ status: 502, code: 'job_rerun_diverged' })
  })
})
