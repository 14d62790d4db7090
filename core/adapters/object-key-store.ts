/**
 * KeyStore over the ObjectStore port (core/ports/key-store.ts): API keys on
 * S3, R2, MinIO or a folder, so an edge on Lambda or Workers and the CLI see
 * the same keys. Needs conditional puts (a duplicate id or hash is refused
 * by If-None-Match, revocation is compare-and-swap); construction throws
 * otherwise.
 *
 * Layout, under `prefix` (default `keys/`):
 *
 *   by-id/<id>                              the record (JSON)
 *   by-hash/<sha256 hex>                    {"id": …}: claims the hash
 *   all/<createdAt, 15 digits>~<id>         empty: every key, creation order
 *   by-tenant/<tenant>/<createdAt>~<id>     empty: one tenant's keys
 *
 * insert claims the id, then the hash (undoing the id claim when the hash is
 * taken), then writes the two index entries. findByHash is two reads (hash →
 * id → record), so a revocation written to the record is seen at once.
 * The adapter never closes the ObjectStore it was given.
 */
import type { ApiKeyRecord, KeyStore } from '../ports/key-store.js'
import type { ObjectStore } from '../ports/object-store.js'
import { createError } from './adapter-error.js'
import {
  casUpdate,
  decodeSegment,
  encodeSegment,
  getJson,
  listAll,
  mapLimit,
  normalisePrefix,
  padTime,
  putIfAbsent,
  requireConditionalPut,
  toJson,
} from './object-records.js'

export const OBJECT_KEY_STORE = 'object-key-store'

export interface ObjectKeyStoreOptions {
  /** The backend; must enforce conditional puts (`supportsConditionalPut`). */
  store: ObjectStore
  /** Key prefix of the records. Default `keys/`. */
  prefix?: string
}

export class ObjectKeyStore implements KeyStore {
  readonly name = OBJECT_KEY_STORE
  private readonly store: ObjectStore
  private readonly prefix: string

  constructor(options: ObjectKeyStoreOptions) {
    requireConditionalPut(OBJECT_KEY_STORE, options?.store)
    this.store = options.store
    this.prefix = normalisePrefix(options.prefix, 'keys/')
  }

  private idKey = (id: string) => `${this.prefix}by-id/${encodeSegment(id)}`
  private hashKey = (hash: string) => `${this.prefix}by-hash/${encodeSegment(hash)}`
  private entry = (rec: ApiKeyRecord) => `${padTime(rec.createdAt)}~${encodeSegment(rec.id)}`
  private tenantPrefix = (tenant: string) => `${this.prefix}by-tenant/${encodeSegment(tenant)}/`

  async insert(rec: ApiKeyRecord): Promise<void> {
    if (!rec.id || !rec.tenant || !rec.hash)
      throw createError(OBJECT_KEY_STORE, 'id, tenant and hash are required')
    if (!Number.isInteger(rec.createdAt) || rec.createdAt < 0)
      throw createError(OBJECT_KEY_STORE, 'createdAt must be epoch ms')
    if (!(await putIfAbsent(this.store, this.idKey(rec.id), toJson(rec))))
      throw createError(OBJECT_KEY_STORE, `key ${rec.id} already exists`)
    if (!(await putIfAbsent(this.store, this.hashKey(rec.hash), toJson({ id: rec.id })))) {
      await this.store.delete(this.idKey(rec.id))
      throw createError(OBJECT_KEY_STORE, `a key with this hash already exists`)
    }
    await this.store.put(`${this.prefix}all/${this.entry(rec)}`, '')
    await this.store.put(`${this.tenantPrefix(rec.tenant)}${this.entry(rec)}`, '')
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | null> {
    if (!hash) return null
    const pointer = await getJson<{ id: string }>(this.store, this.hashKey(hash))
    if (!pointer) return null
    const rec = await this.get(pointer.id)
    return rec && rec.hash === hash ? rec : null
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    if (!id) return null
    return getJson<ApiKeyRecord>(this.store, this.idKey(id))
  }

  async list(tenant?: string): Promise<ApiKeyRecord[]> {
    const prefix = tenant === undefined ? `${this.prefix}all/` : this.tenantPrefix(tenant)
    const ids: string[] = []
    for await (const key of listAll(this.store, prefix)) {
      const idPart = key.slice(key.lastIndexOf('/') + 1).split('~')[1]
      if (idPart !== undefined) ids.push(decodeSegment(idPart))
    }
    const recs = await mapLimit(ids, 16, (id) => this.get(id))
    return recs.filter((r): r is ApiKeyRecord => r !== null && (tenant === undefined || r.tenant === tenant))
  }

  async revoke(id: string, at: number): Promise<ApiKeyRecord | null> {
    if (!id) return null
    return casUpdate<ApiKeyRecord, ApiKeyRecord | null>(
      OBJECT_KEY_STORE,
      this.store,
      this.idKey(id),
      (cur) => {
        if (!cur) return { done: null }
        if (cur.revokedAt !== undefined) return { done: cur } // the first revocation time stays
        const next = { ...cur, revokedAt: at }
        return { write: next, result: next }
      },
    )
  }
}
