/**
 * Contract suite for the UsageStore port (core/ports/usage-store.ts). Every
 * adapter's test file calls `testUsageStore({ name, make })` and nothing else;
 * the suite never skips. Besides the port, the suite requires: a query covers
 * `from <= at < to`; buckets are aligned to `from`; only buckets (and groups)
 * with records are returned, by start then group; recording one id twice
 * (even with another time or counts: a rerun) counts once, the first write
 * standing; records without an id count each time.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { UsageRecord, UsageStore } from '../../core/ports/usage-store.js'

export interface MadeUsageStore {
  /** A fresh, empty store. */
  store: UsageStore
  cleanup?: () => Promise<void>
}

export interface UsageStoreContractOptions {
  name: string
  make: () => Promise<MadeUsageStore>
}

const T0 = Date.UTC(2026, 0, 1) // a round minute
const MIN = 60_000

let n = 0
const rec = (over: Partial<UsageRecord> = {}): UsageRecord => ({
  id: `usage_${++n}`,
  tenant: 'tenant_a',
  apiKeyId: 'key_1',
  model: 'prometheus-mini',
  kind: 'chat.completion',
  promptTokens: 10,
  completionTokens: 5,
  trainedTokens: 0,
  cached: false,
  at: T0,
  ...over,
})

export function testUsageStore({ name, make }: UsageStoreContractOptions) {
  describe(`UsageStore contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.store.close?.())
      return made.store
    }

    it('sums records into time buckets aligned to from', async () => {
      const store = await setup()
      await store.record(rec({ at: T0, promptTokens: 10, completionTokens: 5 }))
      await store.record(rec({ at: T0 + MIN - 1, promptTokens: 1, completionTokens: 2 }))
      await store.record(rec({ at: T0 + MIN, promptTokens: 100, completionTokens: 50 }))
      await store.record(
        rec({
          at: T0 + 3 * MIN + 5,
          kind: 'fine_tune',
          promptTokens: 0,
          completionTokens: 0,
          trainedTokens: 7000,
        }),
      )
      const buckets = await store.query({ tenant: 'tenant_a', from: T0, to: T0 + 5 * MIN, bucketSeconds: 60 })
      expect(buckets).toEqual([
        { start: T0, end: T0 + MIN, requests: 2, promptTokens: 11, completionTokens: 7, trainedTokens: 0 },
        {
          start: T0 + MIN,
          end: T0 + 2 * MIN,
          requests: 1,
          promptTokens: 100,
          completionTokens: 50,
          trainedTokens: 0,
        },
        {
          start: T0 + 3 * MIN,
          end: T0 + 4 * MIN,
          requests: 1,
          promptTokens: 0,
          completionTokens: 0,
          trainedTokens: 7000,
        },
      ])
      const oneBucket = await store.query({
        tenant: 'tenant_a',
        from: T0,
        to: T0 + 5 * MIN,
        bucketSeconds: 3600,
      })
      expect(oneBucket).toEqual([
        {
          start: T0,
          end: T0 + 3600_000,
          requests: 4,
          promptTokens: 111,
          completionTokens: 57,
          trainedTokens: 7000,
        },
      ])
      // Aligned to from, not to the epoch.
      const shifted = await store.query({
        tenant: 'tenant_a',
        from: T0 + 30_000,
        to: T0 + 5 * MIN,
        bucketSeconds: 60,
      })
      expect(shifted.map((b) => [b.start - T0, b.requests])).toEqual([
        [30_000, 2],
        [150_000, 1],
      ])
    })

    it('covers from <= at < to', async () => {
      const store = await setup()
      for (const at of [T0 - 1, T0, T0 + MIN - 1, T0 + MIN]) await store.record(rec({ at }))
      const [only] = await store.query({ tenant: 'tenant_a', from: T0, to: T0 + MIN, bucketSeconds: 60 })
      expect(only.requests).toBe(2)
      expect(
        await store.query({ tenant: 'tenant_a', from: T0 + 2 * MIN, to: T0 + 3 * MIN, bucketSeconds: 60 }),
      ).toEqual([])
    })

    it('filters by tenant, or sums every tenant when none is given', async () => {
      const store = await setup()
      await store.record(rec({ tenant: 'tenant_a', promptTokens: 1 }))
      await store.record(rec({ tenant: 'tenant_b', promptTokens: 20 }))
      await store.record(rec({ tenant: 'tenant_b', promptTokens: 300 }))
      const q = { from: T0, to: T0 + MIN, bucketSeconds: 60 }
      expect((await store.query({ ...q, tenant: 'tenant_a' }))[0]).toMatchObject({
        requests: 1,
        promptTokens: 1,
      })
      expect((await store.query({ ...q, tenant: 'tenant_b' }))[0]).toMatchObject({
        requests: 2,
        promptTokens: 320,
      })
      expect(await store.query({ ...q, tenant: 'tenant_c' })).toEqual([])
      expect((await store.query(q))[0]).toMatchObject({ requests: 3, promptTokens: 321 })
    })

    it.each(['api_key', 'model'] as const)('groups by %s within each bucket', async (groupBy) => {
      const store = await setup()
      await store.record(rec({ apiKeyId: 'key_b', model: 'mini-ft', at: T0 }))
      await store.record(rec({ apiKeyId: 'key_a', model: 'mini', at: T0 + 1 }))
      await store.record(rec({ apiKeyId: 'key_a', model: 'mini', at: T0 + 2, promptTokens: 90 }))
      await store.record(rec({ apiKeyId: 'key_b', model: 'mini-ft', at: T0 + MIN }))
      await store.record(rec({ tenant: 'tenant_b', apiKeyId: 'key_x', model: 'other', at: T0 }))
      const buckets = await store.query({
        tenant: 'tenant_a',
        from: T0,
        to: T0 + 2 * MIN,
        bucketSeconds: 60,
        groupBy,
      })
      const [a, b] = groupBy === 'api_key' ? ['key_a', 'key_b'] : ['mini', 'mini-ft']
      expect(buckets.map((x) => [x.start - T0, x.group, x.requests, x.promptTokens])).toEqual([
        [0, a, 2, 100],
        [0, b, 1, 10],
        [MIN, b, 1, 10],
      ])
    })

    it('counts a record id once, however often it is recorded', async () => {
      const store = await setup()
      const r = rec()
      await store.record(r)
      await store.record(r)
      const [bucket] = await store.query({ tenant: 'tenant_a', from: T0, to: T0 + MIN, bucketSeconds: 60 })
      expect(bucket.requests).toBe(1)
      expect(bucket.promptTokens).toBe(10)
    })

    it('counts an id once when it is recorded again later with other counts (a rerun): the first stands', async () => {
      const store = await setup()
      const first = rec({ at: T0 + 10, promptTokens: 10, completionTokens: 5 })
      await store.record(first)
      await store.record({ ...first, at: T0 + 20, completionTokens: 9, requestId: 'req_rerun' })
      const [bucket] = await store.query({ tenant: 'tenant_a', from: T0, to: T0 + MIN, bucketSeconds: 60 })
      expect(bucket).toMatchObject({ requests: 1, promptTokens: 10, completionTokens: 5 })
    })

    it('counts every record written without an id, beside ones with ids', async () => {
      const store = await setup()
      const once = (over: Partial<UsageRecord>) => {
        const { id: _, ...r } = rec(over)
        return r
      }
      await store.record(once({ promptTokens: 1 }))
      await store.record(once({ promptTokens: 1 }))
      await store.record(once({ promptTokens: 1, at: T0 + 1 }))
      const keyed = rec({ promptTokens: 100 })
      await store.record(keyed)
      await store.record(keyed)
      const [bucket] = await store.query({ tenant: 'tenant_a', from: T0, to: T0 + MIN, bucketSeconds: 60 })
      expect(bucket.requests).toBe(4)
      expect(bucket.promptTokens).toBe(103)
    })

    it('rejects a malformed query', async () => {
      const store = await setup()
      await expect(store.query({ from: T0, to: T0 + MIN, bucketSeconds: 0 })).rejects.toThrow()
      await expect(store.query({ from: T0 + MIN, to: T0, bucketSeconds: 60 })).rejects.toThrow()
    })
  })
}
