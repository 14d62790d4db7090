import { describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../core/adapters/memory-key-store.js'
import {
  createKey,
  ensureKey,
  parseScopes,
  randomSecret,
  sha256Hex,
  timingSafeEqualString,
  verifyKey,
} from './keys.js'

describe('keys', () => {
  it('creates a pgpt_ key stored only as a SHA-256 hash, and verifies it', async () => {
    const store = new MemoryKeyStore()
    const { secret, record } = await createKey(store, { tenant: 't1', name: 'ci', scopes: ['generate'] })
    expect(secret).toMatch(/^pgpt_[A-Za-z0-9]{32}$/)
    expect(record.hash).toBe(await sha256Hex(secret))
    expect(JSON.stringify(await store.list())).not.toContain(secret.slice(5))
    expect(record.display).toBe(`${secret.slice(0, 9)}…${secret.slice(-4)}`)
    expect((await verifyKey(store, secret))?.id).toBe(record.id)
    expect(await verifyKey(store, `${secret}x`)).toBeNull()
    expect(await verifyKey(store, 'sk-not-ours')).toBeNull()
    await store.revoke(record.id, Date.now())
    expect(await verifyKey(store, secret)).toBeNull()
  })

  it('draws distinct secrets', () => {
    const set = new Set(Array.from({ length: 200 }, () => randomSecret()))
    expect(set.size).toBe(200)
  })

  it('parses scopes and rejects unknown ones', () => {
    expect(parseScopes('generate, admin,generate')).toEqual(['generate', 'admin'])
    expect(() => parseScopes('generate,root')).toThrow(/root/)
    expect(() => parseScopes('')).toThrow(/at least one/)
  })

  it('ensureKey registers a given secret once', async () => {
    const store = new MemoryKeyStore()
    const secret = 'pgpt_bootstrapbootstrap1234'
    const a = await ensureKey(store, secret)
    const b = await ensureKey(store, secret)
    expect(a.id).toBe(b.id)
    expect(a.scopes).toContain('admin')
    expect(await store.list()).toHaveLength(1)
  })

  it.each([
    ['abc', 'abc', true],
    ['abc', 'abd', false],
    ['abc', 'abcd', false],
    ['', '', true],
    ['', 'a', false],
  ])('timingSafeEqualString(%j, %j) = %s', (a, b, want) => {
    expect(timingSafeEqualString(a, b)).toBe(want)
  })
})
