/**
 * Contract suite for the KeyStore port (core/ports/key-store.ts). Every
 * adapter's test file calls `testKeyStore({ name, make })` and nothing else;
 * the suite never skips. Besides the port, the suite requires: list in
 * creation order, a duplicate id or hash is refused, and revoking twice keeps
 * the first time.
 */
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { ApiKeyRecord, KeyStore } from '../../core/ports/key-store.js'

export interface MadeKeyStore {
  /** A fresh, empty store. */
  store: KeyStore
  /** A second client of the same keys (another process, as far as the adapter can tell). */
  connect: () => Promise<KeyStore>
  cleanup?: () => Promise<void>
}

export interface KeyStoreContractOptions {
  name: string
  make: () => Promise<MadeKeyStore>
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

let n = 0
function key(over: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  n++
  const secret = `pgpt_secret_${n}_${Math.random().toString(36).slice(2)}`
  return {
    id: `key_${n}`,
    tenant: 'tenant_a',
    name: `key ${n}`,
    scopes: ['generate'],
    hash: sha256(secret),
    display: `pgpt_${secret.slice(5, 9)}…${secret.slice(-4)}`,
    createdAt: 1_700_000_000_000 + n,
    ...over,
  }
}

export function testKeyStore({ name, make }: KeyStoreContractOptions) {
  describe(`KeyStore contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.store.close?.())
      return made
    }

    it('inserts a key and finds it by hash and by id, every field intact', async () => {
      const { store } = await setup()
      const rec = key({
        scopes: ['generate', 'batch', 'admin'],
        limits: { requestsPerMinute: 60, tokensPerMinute: 10_000 },
      })
      await store.insert(rec)
      expect(await store.findByHash(rec.hash)).toEqual(rec)
      expect(await store.get(rec.id)).toEqual(rec)
      const plain = key()
      await store.insert(plain)
      const got = await store.get(plain.id)
      expect(got).toEqual(plain)
      expect(got?.limits).toBeUndefined()
      expect(got?.revokedAt).toBeUndefined()
    })

    it('reads unknown hashes and ids as null', async () => {
      const { store } = await setup()
      await store.insert(key())
      expect(await store.findByHash(sha256('not a key'))).toBeNull()
      expect(await store.get('key_missing')).toBeNull()
      expect(await store.revoke('key_missing', Date.now())).toBeNull()
    })

    it('refuses a duplicate id or hash', async () => {
      const { store } = await setup()
      const rec = key()
      await store.insert(rec)
      await expect(store.insert(key({ id: rec.id }))).rejects.toThrow()
      await expect(store.insert(key({ hash: rec.hash }))).rejects.toThrow()
      expect(await store.list()).toEqual([rec])
    })

    it('lists one tenant’s keys, or all, in creation order', async () => {
      const { store } = await setup()
      const a1 = key()
      const b1 = key({ tenant: 'tenant_b' })
      const a2 = key()
      for (const k of [a1, b1, a2]) await store.insert(k)
      expect(await store.list('tenant_a')).toEqual([a1, a2])
      expect(await store.list('tenant_b')).toEqual([b1])
      expect(await store.list('tenant_c')).toEqual([])
      expect(await store.list()).toEqual([a1, b1, a2])
    })

    it('revokes a key once: the record keeps the first revocation time', async () => {
      const { store } = await setup()
      const rec = key()
      await store.insert(rec)
      const revoked = await store.revoke(rec.id, 1_800_000_000_000)
      expect(revoked).toEqual({ ...rec, revokedAt: 1_800_000_000_000 })
      expect((await store.findByHash(rec.hash))?.revokedAt).toBe(1_800_000_000_000)
      expect((await store.revoke(rec.id, 1_900_000_000_000))?.revokedAt).toBe(1_800_000_000_000)
      expect((await store.list('tenant_a'))[0].revokedAt).toBe(1_800_000_000_000)
    })

    it('a second client sees the same keys', async () => {
      const made = await setup()
      const other = await made.connect()
      cleanups.push(async () => other.close?.())
      const rec = key()
      await made.store.insert(rec)
      expect(await other.findByHash(rec.hash)).toEqual(rec)
      await other.revoke(rec.id, 1_800_000_000_000)
      expect((await made.store.get(rec.id))?.revokedAt).toBe(1_800_000_000_000)
    })
  })
}
