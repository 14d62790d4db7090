import { describe, expect, it } from 'vitest'
import { testResponseCache } from '../../test/contracts/response-cache.js'
import { MemoryResponseCache } from './memory-response-cache.js'

testResponseCache({ name: 'memory', make: async () => ({ cache: new MemoryResponseCache() }) })

const value = (body: string) => ({ status: 200, headers: {}, body, storedAt: 0 })

describe('MemoryResponseCache budget', () => {
  it('evicts the least recently used entry when the byte budget is exceeded', async () => {
    const c = new MemoryResponseCache({ maxBytes: 3 * (2 * (1 + 100) + 64) })
    await c.put('a', value('x'.repeat(100)), 60)
    await c.put('b', value('y'.repeat(100)), 60)
    await c.put('c', value('z'.repeat(100)), 60)
    await c.get('a') // a is now the most recent
    await c.put('d', value('w'.repeat(100)), 60)
    expect(await c.get('b')).toBeNull()
    expect((await c.get('a'))?.body).toHaveLength(100)
    expect(await c.get('c')).not.toBeNull()
    expect(await c.get('d')).not.toBeNull()
    expect(c.bytes).toBeLessThanOrEqual(3 * (2 * 101 + 64))
  })

  it('does not store an entry larger than the budget, nor with a TTL of 0', async () => {
    const c = new MemoryResponseCache({ maxBytes: 100 })
    await c.put('big', value('x'.repeat(1000)), 60)
    await c.put('zero', value('x'), 0)
    expect(c.size).toBe(0)
    expect(c.bytes).toBe(0)
  })

  it('expires by the injected clock', async () => {
    let now = 0
    const c = new MemoryResponseCache({ now: () => now })
    await c.put('k', value('v'), 10)
    now = 9_999
    expect(await c.get('k')).not.toBeNull()
    now = 10_000
    expect(await c.get('k')).toBeNull()
    expect(c.bytes).toBe(0)
  })
})
