/**
 * Contract suite for the ResponseCache port. Every adapter's test calls
 * `testResponseCache({ name, make })`; nothing is skipped.
 */
import { describe, expect, it } from 'vitest'
import type { CachedResponse, ResponseCache } from '../../core/ports/response-cache.js'

export interface ResponseCacheContractOptions {
  name: string
  make: () => Promise<{ cache: ResponseCache; cleanup?: () => Promise<void> }>
}

let n = 0
const uniq = (p: string) => `${p}${Date.now().toString(16)}${(++n).toString(16)}`.padEnd(64, '0')
const resp = (body: string, status = 200): CachedResponse => ({
  status,
  headers: { 'content-type': 'application/json', 'x-pgpt-model': 'm' },
  body,
  storedAt: Date.now(),
})

export function testResponseCache({ name, make }: ResponseCacheContractOptions) {
  describe(`ResponseCache contract: ${name}`, () => {
    const withCache = (fn: (c: ResponseCache) => Promise<void>) => async () => {
      const { cache, cleanup } = await make()
      try {
        await fn(cache)
      } finally {
        await cleanup?.()
      }
    }

    it(
      'misses an unknown key',
      withCache(async (c) => {
        expect(await c.get(uniq('a'))).toBeNull()
      }),
    )

    it(
      'returns what was put: status, headers, body and storedAt',
      withCache(async (c) => {
        const key = uniq('b')
        const value = resp('{"hello":"wörld"}', 200)
        await c.put(key, value, 60)
        const got = await c.get(key)
        expect(got).not.toBeNull()
        expect(got!.status).toBe(200)
        expect(got!.body).toBe(value.body)
        expect(got!.headers['content-type']).toBe('application/json')
        expect(got!.headers['x-pgpt-model']).toBe('m')
        expect(got!.storedAt).toBe(value.storedAt)
      }),
    )

    it(
      'overwrites and deletes',
      withCache(async (c) => {
        const key = uniq('c')
        await c.put(key, resp('one'), 60)
        await c.put(key, resp('two'), 60)
        expect((await c.get(key))!.body).toBe('two')
        await c.delete(key)
        expect(await c.get(key)).toBeNull()
        await c.delete(uniq('never')) // deleting a missing key is fine
      }),
    )

    it(
      'expires after the TTL',
      withCache(async (c) => {
        const key = uniq('d')
        await c.put(key, resp('short'), 1)
        expect((await c.get(key))?.body).toBe('short')
        await new Promise((r) => setTimeout(r, 1100))
        expect(await c.get(key)).toBeNull()
      }),
    )

    it(
      'keeps keys apart',
      withCache(async (c) => {
        const a = uniq('e')
        const b = uniq('f')
        await c.put(a, resp('A'), 60)
        await c.put(b, resp('B'), 60)
        expect((await c.get(a))!.body).toBe('A')
        expect((await c.get(b))!.body).toBe('B')
      }),
    )
  })
}
