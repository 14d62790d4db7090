/**
 * Opens a SQLite database for the embedded adapters. Several adapters (and
 * several processes: the local edge and worker) may share one file, so every
 * connection uses WAL (readers never block the writer) and waits up to
 * `busy_timeout` for another connection's write lock instead of failing.
 * Each adapter keeps its own tables (`pgpt_<adapter>_…`) created with
 * `IF NOT EXISTS`.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { createError } from './adapter-error.js'

export type SqliteDatabase = Database.Database

export interface OpenSqliteOptions {
  /** How long a connection waits for another one's write lock, in ms. Default 5000. */
  busyTimeoutMs?: number
}

export function openSqlite(file: string, options: OpenSqliteOptions = {}): SqliteDatabase {
  if (file !== ':memory:' && !file.startsWith('file:')) mkdirSync(dirname(file), { recursive: true })
  const db = new Database(file)
  // busy_timeout first: switching to WAL needs a lock another process may hold.
  db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`)
  db.pragma('journal_mode = WAL')
  // WAL + NORMAL is durable against process crashes (only an OS crash may lose the last commits).
  db.pragma('synchronous = NORMAL')
  // The adapters prepare their SQL where they use it; compile each text once per connection.
  const statements = new Map<string, Database.Statement>()
  const prepare = db.prepare.bind(db)
  db.prepare = ((sql: string) => {
    let stmt = statements.get(sql)
    if (!stmt) {
      stmt = prepare(sql)
      statements.set(sql, stmt)
    }
    return stmt
  }) as typeof db.prepare
  return db
}

/**
 * One adapter's connection, opened on first use with its schema applied
 * (`CREATE TABLE IF NOT EXISTS …`), and every failure wrapped in the
 * adapter's own error, so each SQLite store only says what is its own.
 */
export class LazySqlite {
  private conn: SqliteDatabase | undefined
  private closed = false

  constructor(
    private readonly adapter: string,
    private readonly file: string,
    /** SQL run on open, or a function that sets the schema up (migrations). */
    private readonly schema: string | ((db: SqliteDatabase) => void),
  ) {
    if (!file) throw createError(adapter, 'file is required')
  }

  get isClosed(): boolean {
    return this.closed
  }

  get db(): SqliteDatabase {
    if (this.closed) throw createError(this.adapter, 'store is closed')
    if (!this.conn) {
      try {
        const db = openSqlite(this.file)
        if (typeof this.schema === 'string') db.exec(this.schema)
        else this.schema(db)
        this.conn = db
      } catch (cause) {
        throw createError(this.adapter, `cannot open ${this.file}`, { cause })
      }
    }
    return this.conn
  }

  /** Run `fn` on the connection; its errors come back as `<op> failed` errors of the adapter. */
  run<T>(op: string, fn: (db: SqliteDatabase) => T): T {
    const db = this.db
    try {
      return fn(db)
    } catch (cause) {
      throw createError(this.adapter, `${op} failed`, { cause })
    }
  }

  close(): void {
    this.closed = true
    this.conn?.close()
    this.conn = undefined
  }
}
