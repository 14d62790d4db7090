import { describe, expect, it } from 'vitest'
import { canonicalHash, canonicalJson } from './canonical.js'

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[1,{"y":2,"z":1}]},"b":1}',
    )
  })
  it('hashes equal objects equally regardless of key order', async () => {
    expect(await canonicalHash({ x: 1, y: 'a' })).toBe(await canonicalHash({ y: 'a', x: 1 }))
    expect(await canonicalHash({ x: 1 })).not.toBe(await canonicalHash({ x: 2 }))
    expect(await canonicalHash({ x: 1 })).toMatch(/^[0-9a-f]{64}$/)
  })
})
