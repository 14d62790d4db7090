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
