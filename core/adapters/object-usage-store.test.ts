/**
 * ObjectUsageStore runs the UsageStore contract over FsObjectStore, and over
 * S3ObjectStore against s3rver twice: behind the conditional-write shim of
 * test/servers/s3-server.ts, and as plain s3rver (`conditionalWrites: false`,
 * the store built with `conditionalPut: false`). Usage records need no
 * conditional puts (append-only, deduped by id at query time), so plain
 * s3rver's lack of If-None-Match enforcement does not matter here.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testUsageStore } from '../../test/contracts/usage-store.js'
import { type S3Server, s3StoreOf, startS3Server } from '../../test/servers/s3-server.js'
import { FsObjectStore } from './fs-store.js'
import { ObjectUsageStore } from './object-usage-store.js'

testUsageStore({
  name: 'objects over FsObjectStore',
  make: async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-objusage-'))
    return {
      store: new ObjectUsageStore({ store: new FsObjectStore({ root }) }),
      cleanup: () => rm(root, { recursive: true, force: true }),
    }
  },
})

let shimmed: S3Server
let plain: S3Server
beforeAll(async () => {
  ;[shimmed, plain] = await Promise.all([startS3Server(), startS3Server({ conditionalWrites: false })])
})
afterAll(async () => {
  await shimmed?.stop()
  await plain?.stop()
})

let n = 0
const s3 = (server: S3Server, conditionalPut: boolean) =>
  s3StoreOf(server, { prefix: `usage${process.pid}-${++n}/`, conditionalPut })

testUsageStore({
  name: 'objects over S3ObjectStore (conditional-write shim)',
  make: async () => ({ store: new ObjectUsageStore({ store: s3(shimmed, true) }) }),
})
testUsageStore({
  name: 'objects over S3ObjectStore (plain s3rver, no conditional puts)',
  make: async () => ({ store: new ObjectUsageStore({ store: s3(plain, false) }) }),
})

describe('ObjectUsageStore', () => {
  it('lists only the partitions a query overlaps, and sums across them', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-objusage-'))
    try {
      const fs = new FsObjectStore({ root })
      const store = new ObjectUsageStore({ store: fs })
      const T0 = Date.UTC(2026, 0, 1, 10)
      const base = { tenant: 't/x', apiKeyId: 'k', model: 'm~1', kind: 'completion', cached: false }
      const usage = { promptTokens: 1, completionTokens: 2, trainedTokens: 0 }
      await store.record({ ...base, ...usage, id: 'u1', at: T0 - 1 })
      await store.record({ ...base, ...usage, id: 'u2', at: T0 + 5 })
      await store.record({ ...base, ...usage, id: 'u3', at: T0 + 3600_000 })
      const keys = (await fs.list('usage/')).objects.map((o) => o.key)
      expect(keys.map((k) => k.split('/')[1]).sort()).toEqual([
        '20260101T0900Z',
        '20260101T1000Z',
        '20260101T1100Z',
      ])
      const listed: string[] = []
      const spy = { ...fs, name: fs.name, supportsConditionalPut: true } as FsObjectStore
      spy.list = (prefix, o) => {
        listed.push(prefix)
        return fs.list(prefix, o)
      }
      const q = new ObjectUsageStore({ store: spy })
      const out = await q.query({
        tenant: 't/x',
        from: T0,
        to: T0 + 2 * 3600_000,
        bucketSeconds: 7200,
        groupBy: 'model',
      })
      expect(out).toEqual([
        {
          start: T0,
          end: T0 + 7200_000,
          group: 'm~1',
          requests: 2,
          promptTokens: 2,
          completionTokens: 4,
          trainedTokens: 0,
        },
      ])
      expect(listed).toEqual(['usage/20260101T1000Z/t%2Fx/', 'usage/20260101T1100Z/t%2Fx/'])
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })

  it('refuses a partition shorter than a minute', () => {
    expect(() => new ObjectUsageStore({ store: {} as FsObjectStore, partitionSeconds: 10 })).toThrow(
      /partitionSeconds/,
    )
  })
})
