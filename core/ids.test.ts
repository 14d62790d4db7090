import { describe, expect, it } from 'vitest'
import { newId } from './ids.js'

describe('newId', () => {
  it('has the prefix and sorts by creation time', async () => {
    const a = newId('job')
    await new Promise((r) => setTimeout(r, 3))
    const b = newId('job')
    expect(a).toMatch(/^job_[0-9a-z]{21}$/)
    expect(a < b).toBe(true)
  })

  it('does not repeat', () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => newId('x')))
    expect(ids.size).toBe(10_000)
  })
})
