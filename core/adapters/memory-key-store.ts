/**
 * In-memory KeyStore, a test double until the SQLite adapter lands
 * (core/adapters/sqlite-key-store.ts). Same semantics: lookups by hash, tenant filter.
 */
import type { ApiKeyRecord, KeyStore } from '../ports/key-store.js'

export class MemoryKeyStore implements KeyStore {
  readonly name = 'memory'
  private readonly byId = new Map<string, ApiKeyRecord>()

  async insert(rec: ApiKeyRecord): Promise<void> {
    if (this.byId.has(rec.id)) throw new Error(`MemoryKeyStore: key '${rec.id}' exists`)
    for (const r of this.byId.values())
      if (r.hash === rec.hash) throw new Error('MemoryKeyStore: duplicate hash')
    this.byId.set(rec.id, structuredClone(rec))
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | null> {
    for (const r of this.byId.values()) if (r.hash === hash) return structuredClone(r)
    return null
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const r = this.byId.get(id)
    return r ? structuredClone(r) : null
  }

  async list(tenant?: string): Promise<ApiKeyRecord[]> {
    return [...this.byId.values()]
      .filter((r) => tenant === undefined || r.tenant === tenant)
      .sort((a, b) => a.createdAt - b.createdAt)
      .map((r) => structuredClone(r))
  }

  async revoke(id: string, at: number): Promise<ApiKeyRecord | null> {
    const r = this.byId.get(id)
    if (!r) return null
    r.revokedAt ??= at
    return structuredClone(r)
  }
}
