/**
 * API keys: `pgpt_` + 32 random base62 characters. Only the SHA-256 of the
 * full secret is stored (KeyStore port); verification hashes the presented
 * secret, looks the hash up and compares it again in constant time. Runtime
 * neutral (Web Crypto), so the edge on Workers and the CLI share it.
 */
import { newId } from '../core/ids.js'
import { type ApiKeyRecord, type KeyStore, SCOPES, type Scope } from '../core/ports/key-store.js'

export const KEY_PREFIX = 'pgpt_'
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
const SECRET_PATTERN = /^pgpt_[A-Za-z0-9_-]{16,200}$/

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))
  let hex = ''
  for (const b of new Uint8Array(digest)) hex += b.toString(16).padStart(2, '0')
  return hex
}

/** Compares two strings in time that depends only on their lengths. */
export function timingSafeEqualString(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a)
  const y = new TextEncoder().encode(b)
  let diff = x.length ^ y.length
  for (let i = 0; i < Math.max(x.length, y.length); i++)
    diff |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0)
  return diff === 0
}

export function randomSecret(length = 32): string {
  // Rejection sampling keeps the alphabet uniform (256 is not a multiple of 62).
  let out = ''
  while (out.length < length) {
    for (const b of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (b < 248 && out.length < length) out += ALPHABET[b % 62]
    }
  }
  return KEY_PREFIX + out
}

export const displayOf = (secret: string) => `${secret.slice(0, 9)}…${secret.slice(-4)}`

export function parseScopes(value: string | string[]): Scope[] {
  const list = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim()).filter(Boolean)
  for (const s of list)
    if (!SCOPES.includes(s as Scope)) throw new Error(`unknown scope '${s}' (one of ${SCOPES.join(', ')})`)
  if (!list.length) throw new Error('at least one scope is required')
  return [...new Set(list)] as Scope[]
}

export interface CreateKeyOptions {
  tenant: string
  name: string
  scopes: Scope[]
  limits?: ApiKeyRecord['limits']
  /** Register this secret instead of a random one (the boot-time PGPT_API_KEY). */
  secret?: string
}

/** Creates and stores a key. The secret is returned once and never stored. */
export async function createKey(
  store: KeyStore,
  o: CreateKeyOptions,
): Promise<{ secret: string; record: ApiKeyRecord }> {
  if (!o.tenant) throw new Error('createKey: tenant is required')
  if (o.secret !== undefined && !SECRET_PATTERN.test(o.secret))
    throw new Error('createKey: secret must look like pgpt_…')
  const secret = o.secret ?? randomSecret()
  const record: ApiKeyRecord = {
    id: newId('key'),
    tenant: o.tenant,
    name: o.name,
    scopes: parseScopes(o.scopes),
    hash: await sha256Hex(secret),
    display: displayOf(secret),
    createdAt: Date.now(),
    ...(o.limits ? { limits: o.limits } : {}),
  }
  await store.insert(record)
  return { secret, record }
}

/**
 * Digests of recently presented secrets, so a busy key is not re-hashed on
 * every request (Web Crypto's digest is the largest part of authentication).
 * Only the digest is memoised: the record (and so a revocation) is read from
 * the store every time.
 */
const DIGESTS_MAX = 1024
const digests = new Map<string, string>()

async function secretDigest(secret: string): Promise<string> {
  const known = digests.get(secret)
  if (known) return known
  const hash = await sha256Hex(secret)
  if (digests.size >= DIGESTS_MAX) digests.delete(digests.keys().next().value!)
  digests.set(secret, hash)
  return hash
}

/** The key a secret belongs to, or null (unknown, malformed or revoked). */
export async function verifyKey(store: KeyStore, secret: string): Promise<ApiKeyRecord | null> {
  if (!SECRET_PATTERN.test(secret)) return null
  const hash = await secretDigest(secret)
  const rec = await store.findByHash(hash)
  if (!rec || !timingSafeEqualString(rec.hash, hash) || rec.revokedAt !== undefined) return null
  return rec
}

/** Registers `secret` as an admin key of `tenant` unless it is already known. */
export async function ensureKey(
  store: KeyStore,
  secret: string,
  o: Omit<CreateKeyOptions, 'secret'> = { tenant: 'default', name: 'bootstrap', scopes: [...SCOPES] },
): Promise<ApiKeyRecord> {
  const existing = await store.findByHash(await sha256Hex(secret))
  if (existing) return existing
  return (await createKey(store, { ...o, secret })).record
}

export const hasScope = (rec: ApiKeyRecord, scope: Scope) => rec.scopes.includes(scope)
