/**
 * KeyStore on SQLite: the embedded default of the API-key port
 * (core/ports/key-store.ts). Only the SHA-256 hash of a secret is stored
 * (unique, indexed: authentication is one lookup by hash). Listing is in
 * creation order. Revoking keeps the first revocation time.
 */
import type { ApiKeyRecord, KeyStore } from '../ports/key-store.js'
import { createError } from './adapter-error.js'
import { LazySqlite, type SqliteDatabase } from './sqlite.js'

export const SQLITE_KEY_STORE = 'sqlite-key-store'

export interface SqliteKeyStoreOptions {
  /** SQLite file (created with its folder); may be shared with other adapters and processes. */
  file: string
}

const TABLE = 'pgpt_api_keys'

interface KeyRow {
  id: string
  tenant: string
  name: string
  scopes: string
  hash: string
  display: string
  created_at: number
  revoked_at: number | null
  limits: string | null
}

function toRecord(r: KeyRow): ApiKeyRecord {
  const rec: ApiKeyRecord = {
    id: r.id,
    tenant: r.tenant,
    name: r.name,
    scopes: JSON.parse(r.scopes),
    hash: r.hash,
    display: r.display,
    createdAt: r.created_at,
  }
  if (r.revoked_at !== null) rec.revokedAt = r.revoked_at
  if (r.limits !== null) rec.limits = JSON.parse(r.limits)
  return rec
}

export class SqliteKeyStore implements KeyStore {
  readonly name = SQLITE_KEY_STORE
  private readonly sqlite: LazySqlite

  constructor(options: SqliteKeyStoreOptions) {
    this.sqlite = new LazySqlite(
      SQLITE_KEY_STORE,
      options.file,
      `
          CREATE TABLE IF NOT EXISTS ${TABLE} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            scopes TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            display TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER,
            limits TEXT
          );
          CREATE INDEX IF NOT EXISTS ${TABLE}_tenant ON ${TABLE} (tenant, seq);
        `,
    )
  }

  private get db(): SqliteDatabase {
    return this.sqlite.db
  }

  async insert(rec: ApiKeyRecord): Promise<void> {
    if (!rec.id || !rec.tenant || !rec.hash)
      throw createError(SQLITE_KEY_STORE, 'id, tenant and hash are required')
    this.run('insert', (db) =>
      db
        .prepare(
          `INSERT INTO ${TABLE} (id, tenant, name, scopes, hash, display, created_at, revoked_at, limits)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          rec.id,
          rec.tenant,
          rec.name,
          JSON.stringify(rec.scopes),
          rec.hash,
          rec.display,
          rec.createdAt,
          rec.revokedAt ?? null,
          rec.limits === undefined ? null : JSON.stringify(rec.limits),
        ),
    )
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | null> {
    const row = this.run('findByHash', (db) =>
      db.prepare<[string], KeyRow>(`SELECT * FROM ${TABLE} WHERE hash = ?`).get(hash),
    )
    return row ? toRecord(row) : null
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const row = this.run('get', (db) =>
      db.prepare<[string], KeyRow>(`SELECT * FROM ${TABLE} WHERE id = ?`).get(id),
    )
    return row ? toRecord(row) : null
  }

  async list(tenant?: string): Promise<ApiKeyRecord[]> {
    const rows = this.run('list', (db) =>
      tenant === undefined
        ? db.prepare<[], KeyRow>(`SELECT * FROM ${TABLE} ORDER BY seq`).all()
        : db.prepare<[string], KeyRow>(`SELECT * FROM ${TABLE} WHERE tenant = ? ORDER BY seq`).all(tenant),
    )
    return rows.map(toRecord)
  }

  async revoke(id: string, at: number): Promise<ApiKeyRecord | null> {
    const row = this.run('revoke', (db) =>
      db
        .prepare<[number, string], KeyRow>(
          `UPDATE ${TABLE} SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING *`,
        )
        .get(at, id),
    )
    return row ? toRecord(row) : null
  }

  async close(): Promise<void> {
    this.sqlite.close()
  }

  private run<T>(op: string, fn: (db: SqliteDatabase) => T): T {
    return this.sqlite.run(op, fn)
  }
}
