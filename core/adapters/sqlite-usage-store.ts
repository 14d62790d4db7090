/**
 * UsageStore on SQLite: the embedded default of the usage port
 * (core/ports/usage-store.ts). One row per usage record (and one per
 * series, what records share); totals are summed
 * at query time (never kept as counters), so they can be audited.
 *
 * Recording is idempotent by record id (a retried write counts once); a
 * record without an id (written once, as the edge's) is stored without one.
 * A query covers records with `from <= at < to` (epoch ms). Buckets are
 * aligned to `from`, `bucketSeconds` long: bucket i is
 * [from + i·size, from + (i+1)·size). Only buckets (and groups) with records
 * are returned, ordered by start, then group.
 */

import type { Statement } from 'better-sqlite3'
import type { UsageBucket, UsageQuery, UsageRecord, UsageStore } from '../ports/usage-store.js'
import { branch, type ValueTree } from '../value-tree.js'
import { createError } from './adapter-error.js'
import { LazySqlite, type SqliteDatabase } from './sqlite.js'

export const SQLITE_USAGE_STORE = 'sqlite-usage-store'

export interface SqliteUsageStoreOptions {
  /** SQLite file (created with its folder); may be shared with other adapters and processes. */
  file: string
}

/**
 * A series: what many records share (tenant, key, model, kind, cached), kept
 * once; each record row holds its series' integer id. Writing the shared
 * strings with every record cost half its insert (each string converted from
 * V8 and bound one by one, then stored in the row and the tenant index), and
 * the write of usage records is the largest part of what observability
 * costs a cache hit (docs/benchmarks.md).
 */
const SERIES = 'pgpt_usage_series'
const RECORDS = 'pgpt_usage_records'
/** The layout before series: one row with every column per record; migrated on open. */
const LEGACY = 'pgpt_usage'
/** Where migrateKeyedRecords moves the records table of the layout where every record had an id. */
const KEYED = 'pgpt_usage_records_keyed'
/** Columns a record is written to, in the order of its row values. */
const COLUMNS = 'series, prompt_tokens, completion_tokens, trained_tokens, request_id, at, id'

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS ${SERIES} (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    cached INTEGER NOT NULL,
    UNIQUE (tenant, api_key_id, model, kind, cached)
  );
  CREATE TABLE IF NOT EXISTS ${RECORDS} (
    series INTEGER NOT NULL REFERENCES ${SERIES} (id),
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    trained_tokens INTEGER NOT NULL,
    request_id TEXT,
    at INTEGER NOT NULL,
    id TEXT
  );
  CREATE INDEX IF NOT EXISTS ${RECORDS}_series_at ON ${RECORDS} (series, at);
  -- Partial: records written once (no id, most of them) cost no entry here.
  CREATE UNIQUE INDEX IF NOT EXISTS ${RECORDS}_id ON ${RECORDS} (id) WHERE id IS NOT NULL;
`

/**
 * The previous layout keyed every record by its id (`id TEXT PRIMARY KEY`):
 * a third b-tree insert per record, and a record id the edge made up per
 * request only to fill it. Moved into the current layout in one transaction,
 * taken before any other connection can start the same move.
 */
function migrateKeyedRecords(db: SqliteDatabase): void {
  db.transaction(() => {
    const keyed = db
      .prepare(`SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?`)
      .get(`sqlite_autoindex_${RECORDS}_1`)
    if (!keyed) return
    db.exec(`
      DROP INDEX IF EXISTS ${RECORDS}_series_at;
      ALTER TABLE ${RECORDS} RENAME TO ${KEYED};
      ${SCHEMA}
      INSERT INTO ${RECORDS} (${COLUMNS})
        SELECT series, prompt_tokens, completion_tokens, trained_tokens, request_id, at, id FROM ${KEYED};
      DROP TABLE ${KEYED};
    `)
  }).immediate()
}

/** Moves the records of a file written before series into the new layout, in one transaction. */
function migrateLegacy(db: SqliteDatabase): void {
  const legacy = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(LEGACY)
  if (!legacy) return
  db.transaction(() => {
    db.exec(`
      INSERT INTO ${SERIES} (tenant, api_key_id, model, kind, cached)
        SELECT DISTINCT tenant, api_key_id, model, kind, cached FROM ${LEGACY} WHERE true
        ON CONFLICT DO NOTHING;
      INSERT INTO ${RECORDS} (${COLUMNS})
        SELECT s.id, u.prompt_tokens, u.completion_tokens, u.trained_tokens, u.request_id, u.at, u.id
        FROM ${LEGACY} u JOIN ${SERIES} s
          ON s.tenant = u.tenant AND s.api_key_id = u.api_key_id AND s.model = u.model
             AND s.kind = u.kind AND s.cached = u.cached
        WHERE true ON CONFLICT (id) WHERE id IS NOT NULL DO NOTHING;
      DROP TABLE ${LEGACY};
    `)
  })()
}

const GROUP_COLUMN = { api_key: 's.api_key_id', model: 's.model' } as const

interface BucketRow {
  b: number
  g: string | null
  requests: number
  prompt: number
  completion: number
  trained: number
}

/**
 * The records of the next commit, kept as their row values (numbers and the
 * two id strings): a record object kept until the commit would be copied by
 * every young-generation collection in between. One promise for them all.
 */
interface Batch {
  values: unknown[]
  rows: number
  committed: Promise<void>
  resolve: () => void
  reject: (err: unknown) => void
}

const isCount = (n: number) => Number.isInteger(n) && n >= 0

/**
 * Event-loop turns a commit waits for more records. Per commit, SQLite writes
 * the WAL frames of every page it touched (~7 pages for 32 records) whatever
 * the number of records: with a commit per turn that was ~1 000 instructions
 * per record for the WAL checksums alone.
 */
const COMMIT_TURNS = 8

/** Rows one INSERT statement writes at most. */
const ROWS_PER_INSERT = 32

/** Values of one row, in COLUMNS order. */
const PER_ROW = 7

/**
 * Series ids of the connection, and its batch insert: records in one
 * transaction, a record id already stored counting once. One statement
 * writes up to ROWS_PER_INSERT rows: each run of a statement costs ~6 000
 * instructions of its own (better-sqlite3's call and result, SQLite's program
 * start and reset).
 */
function writerFor(db: SqliteDatabase) {
  const statements: Array<Statement<unknown[]>> = []
  const insert = (rows: number) =>
    (statements[rows] ??= db.prepare<unknown[]>(
      `INSERT INTO ${RECORDS} (${COLUMNS}) VALUES ${Array(rows).fill('(?, ?, ?, ?, ?, ?, ?)').join(', ')}
       ON CONFLICT (id) WHERE id IS NOT NULL DO NOTHING`,
    ))
  const addSeries = db.prepare<unknown[]>(
    `INSERT INTO ${SERIES} (tenant, api_key_id, model, kind, cached) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
  )
  const seriesId = db
    .prepare<unknown[], number>(
      `SELECT id FROM ${SERIES} WHERE tenant = ? AND api_key_id = ? AND model = ? AND kind = ? AND cached = ?`,
    )
    .pluck()
  /**
   * Series ids by tenant, key, model, kind and cached (core/value-tree.ts).
   * A new series is committed on its own when its first record arrives,
   * and series rows are never removed, so a known id stays right.
   */
  const known: ValueTree = new Map()
  const leaf = (r: UsageRecord) =>
    branch(branch(branch(branch(known, r.tenant), r.apiKeyId), r.model), r.kind)
  /** The series id when known, without touching the database. */
  const knownSeries = (r: UsageRecord) => leaf(r).get(r.cached ? 1 : 0) as number | undefined
  /** The series id, stored first when new. */
  const series = (r: UsageRecord): number => {
    const cached = r.cached ? 1 : 0
    const values = [r.tenant, r.apiKeyId, r.model, r.kind, cached]
    addSeries.run(...values)
    const id = seriesId.get(...values)!
    leaf(r).set(cached, id)
    return id
  }
  /** Rows of PER_ROW values each (COLUMNS order), in one transaction. */
  const write = db.transaction((values: unknown[], rows: number) => {
    for (let from = 0; from < rows; from += ROWS_PER_INSERT) {
      const n = Math.min(ROWS_PER_INSERT, rows - from)
      // Spread, not an array: the binding reads an array one element at a time, slowly.
      insert(n).run(...values.slice(from * PER_ROW, (from + n) * PER_ROW))
    }
  })
  return { knownSeries, series, write }
}

export class SqliteUsageStore implements UsageStore {
  readonly name = SQLITE_USAGE_STORE
  private readonly sqlite: LazySqlite
  private batch: Batch | undefined
  /** Series ids and the batch insert of the open connection. */
  private writer: ReturnType<typeof writerFor> | undefined

  constructor(options: SqliteUsageStoreOptions) {
    this.sqlite = new LazySqlite(SQLITE_USAGE_STORE, options.file, (db) => {
      migrateKeyedRecords(db)
      db.exec(SCHEMA)
      migrateLegacy(db)
    })
  }

  private get db(): SqliteDatabase {
    return this.sqlite.db
  }

  /**
   * Group commit: records that arrive within COMMIT_TURNS turns of the event
   * loop are written in one transaction, and each call resolves once its
   * record is committed. One commit per record cost ~160 µs of CPU per
   * request on a busy edge (WAL page writes for the table and its indexes);
   * batching keeps the durability of a synchronous insert at a fraction of
   * that. The wait is counted in turns, not time: an idle loop runs them
   * back to back (microseconds), a busy one gathers each turn's records.
   * Give a record an id only when it may be written again: each id is an
   * entry in the id index, and random ids (UUIDs) land on a different page
   * of it each, which made every commit write several more pages (about 3×
   * the CPU per record on a busy machine, when every record had one).
   */
  record(rec: UsageRecord): Promise<void> {
    const invalid =
      !rec.tenant || rec.id === ''
        ? 'tenant is required, and an id when given is not empty'
        : !(
              isCount(rec.promptTokens) &&
              isCount(rec.completionTokens) &&
              isCount(rec.trainedTokens) &&
              isCount(rec.at)
            )
          ? 'token counts and at must be integers >= 0'
          : this.sqlite.isClosed
            ? 'store is closed'
            : undefined
    if (invalid) return Promise.reject(createError(SQLITE_USAGE_STORE, invalid))
    let series = this.writer?.knownSeries(rec)
    if (series === undefined)
      try {
        series = this.run('record', (db) => {
          this.writer ??= writerFor(db)
          return this.writer.knownSeries(rec) ?? this.writer.series(rec)
        })
      } catch (err) {
        return Promise.reject(err)
      }
    if (!this.batch) {
      let resolve = () => {}
      let reject: (err: unknown) => void = () => {}
      const committed = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      const batch: Batch = { values: [], rows: 0, committed, resolve, reject }
      this.batch = batch
      const wait = (turns: number) => setImmediate(() => (turns > 1 ? wait(turns - 1) : this.flush(batch)))
      wait(COMMIT_TURNS)
    }
    this.batch.values.push(
      series,
      rec.promptTokens,
      rec.completionTokens,
      rec.trainedTokens,
      rec.requestId ?? null,
      rec.at,
      rec.id ?? null,
    )
    this.batch.rows++
    return this.batch.committed // one promise for the whole commit, not one per record
  }

  /** Write the pending records (if still `only`'s) in one transaction; settle their promise. */
  private flush(only?: Batch): void {
    const batch = this.batch
    if (!batch || (only && batch !== only)) return // already written (by a query or close)
    this.batch = undefined
    try {
      this.run('record', (db) => {
        this.writer ??= writerFor(db)
        this.writer.write(batch.values, batch.rows)
      })
      batch.resolve()
    } catch (err) {
      batch.reject(err)
    }
  }

  async query(q: UsageQuery): Promise<UsageBucket[]> {
    this.flush() // records of this turn, not committed yet, are counted
    if (!Number.isInteger(q.bucketSeconds) || q.bucketSeconds < 1)
      throw createError(SQLITE_USAGE_STORE, 'bucketSeconds must be an integer >= 1')
    if (!Number.isInteger(q.from) || !Number.isInteger(q.to) || q.to <= q.from)
      throw createError(SQLITE_USAGE_STORE, 'from and to must be epoch ms with to after from')
    if (q.groupBy !== undefined && !(q.groupBy in GROUP_COLUMN))
      throw createError(SQLITE_USAGE_STORE, `groupBy must be api_key or model, got '${q.groupBy}'`)
    const size = q.bucketSeconds * 1000
    const group = q.groupBy ? GROUP_COLUMN[q.groupBy] : 'NULL'
    const tenant = q.tenant !== undefined
    const rows = this.run('query', (db) =>
      db
        .prepare<unknown[], BucketRow>(
          `SELECT (r.at - CAST(? AS INTEGER)) / CAST(? AS INTEGER) AS b, ${group} AS g, COUNT(*) AS requests,
             SUM(r.prompt_tokens) AS prompt, SUM(r.completion_tokens) AS completion,
             SUM(r.trained_tokens) AS trained
           FROM ${SERIES} s CROSS JOIN ${RECORDS} r -- series outside: each one's records by (series, at)
           WHERE ${tenant ? 's.tenant = ? AND' : ''} r.series = s.id AND r.at >= ? AND r.at < ?
           GROUP BY b, g ORDER BY b, g`,
        )
        .all(q.from, size, ...(tenant ? [q.tenant] : []), q.from, q.to),
    )
    return rows.map((r) => ({
      start: q.from + r.b * size,
      end: q.from + (r.b + 1) * size,
      ...(q.groupBy ? { group: r.g ?? '' } : {}),
      requests: r.requests,
      promptTokens: r.prompt,
      completionTokens: r.completion,
      trainedTokens: r.trained,
    }))
  }

  async close(): Promise<void> {
    this.flush()
    this.sqlite.close()
  }

  private run<T>(op: string, fn: (db: SqliteDatabase) => T): T {
    return this.sqlite.run(op, fn)
  }
}
