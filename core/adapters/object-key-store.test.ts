/**
 * ObjectKeyStore runs the KeyStore contract over FsObjectStore and over
 * S3ObjectStore against test/servers/s3-server.ts, which enforces
 * If-None-Match/If-Match in front of s3rver as S3 does (plain s3rver would
 * accept a duplicate id or hash: the "refuses a duplicate" case needs the shim).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { testKeyStore } from '../../test/contracts/key-store.js'
import { objectBackends } from '../../test/servers/object-backends.js'
import { FsObjectStore } from './fs-store.js'
import { ObjectKeyStore } from './object-key-store.js'

const backends = objectBackends('objkeys')
testKeyStore({
  name: 'objects over FsObjectStore',
  make: backends.overFolder((store) => new ObjectKeyStore({ store })),
})
testKeyStore({
  name: 'objects over S3ObjectStore (s3rver behind the conditional-write shim)',
  make: backends.overS3((store) => new ObjectKeyStore({ store })),
})

describe('ObjectKeyStore', () => {
  it('two stores over one folder inserting one hash at once: exactly one key exists after', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-objkeys-'))
    try {
      const a = new ObjectKeyStore({ store: new FsObjectStore({ root }) })
      const b = new ObjectKeyStore({ store: new FsObjectStore({ root }) })
      const rec = (id: string) => ({
        id,
        tenant: 't',
        name: id,
        scopes: ['generate' as const],
        hash: 'ab'.repeat(32),
        display: 'pgpt_x…y',
        createdAt: 1,
      })
      const results = await Promise.allSettled([a.insert(rec('key_a')), b.insert(rec('key_b'))])
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      const listed = await a.list()
      expect(listed).toHaveLength(1)
      expect(await b.findByHash('ab'.repeat(32))).toEqual(listed[0])
      // The loser's id claim was undone.
      const loser = listed[0].id === 'key_a' ? 'key_b' : 'key_a'
      expect(await a.get(loser)).toBeNull()
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })

  it('refuses a store that does not enforce conditional puts', () => {
    expect(() => new ObjectKeyStore({ store: backends.s3('x/', false) })).toThrow(
      /does not enforce conditional puts/,
    )
  })
})
