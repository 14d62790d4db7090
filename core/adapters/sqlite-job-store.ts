/**
 * JobStore on SQLite: the embedded default of the job-records port
 * (core/ports/job-store.ts). The state machine is enforced by the database:
 * a transition is one `UPDATE … WHERE id = ? AND state IN (<states allowed to
 * move to the target>) RETURNING *`, so when two processes race to finish one
 * job exactly one UPDATE matches and the other gets IllegalTransitionError.
 * A fenced write (`patch.run`) also says `AND attempts = ?`: a worker whose job
 * another worker took over gets StaleRunError.
 *
 * Listing is newest first by insertion order (an autoincrement `seq`, which
 * also orders jobs created within one millisecond); the cursor `after` is a
 * job id, looked up to its `seq`.
 */
import { newId } from '../ids.js'
import {
  checkRun,
  IllegalTransitionError,
  isTerminal,
  JOB_STATES,
  JOB_TRANSITIONS,
  type JobListOptions,
  type JobPage,
  type JobRecord,
  type JobState,
  type JobStore,
  type NewJob,
  type PurgeOptions,
  TERMINAL_STATES,
  type TransitionPatch,
} from '../ports/job-store.js'
import { createError } from './adapter-error.js'
import { LazySqlite, type SqliteDatabase } from './sqlite.js'

export const SQLITE_JOB_STORE = 'sqlite-job-store'

export interface SqliteJobStoreOptions {
  /** SQLite file (created with its folder); may be shared with other adapters and processes. */
  file: string
}

const TABLE = 'pgpt_jobs'
const DEFAULT_LIMIT = 20
const MAX_LIMIT = 1000

interface JobRow {
  seq: number
  id: string
  tenant: string
  kind: string
  state: JobState
  model: string | null
  input: string
  output: string | null
  error: string | null
  attempts: number
  cancel_requested: number
  request_id: string | null
  api_key_id: string | null
  webhook: string | null
  metadata: string | null
  created_at: number
  updated_at: number
  started_at: number | null
  finished_at: number | null
}

/** For each target state, the states a job may move to it from. */
const ALLOWED_FROM = Object.fromEntries(
  JOB_STATES.map((to) => [to, JOB_STATES.filter((from) => JOB_TRANSITIONS[from].includes(to))]),
) as Record<JobState, JobState[]>

const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v))

function toRecord(r: JobRow): JobRecord {
  const rec: JobRecord = {
    id: r.id,
    tenant: r.tenant,
    kind: r.kind,
    state: r.state,
    input: JSON.parse(r.input),
    attempts: r.attempts,
    cancelRequested: r.cancel_requested === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
  if (r.model !== null) rec.model = r.model
  if (r.output !== null) rec.output = JSON.parse(r.output)
  if (r.error !== null) rec.error = JSON.parse(r.error)
  if (r.request_id !== null) rec.requestId = r.request_id
  if (r.api_key_id !== null) rec.apiKeyId = r.api_key_id
  if (r.webhook !== null) rec.webhook = JSON.parse(r.webhook)
  if (r.metadata !== null) rec.metadata = JSON.parse(r.metadata)
  if (r.started_at !== null) rec.startedAt = r.started_at
  if (r.finished_at !== null) rec.finishedAt = r.finished_at
  return rec
}

export class SqliteJobStore implements JobStore {
  readonly name = SQLITE_JOB_STORE
  private readonly sqlite: LazySqlite

  constructor(options: SqliteJobStoreOptions) {
    this.sqlite = new LazySqlite(
      SQLITE_JOB_STORE,
      options.file,
      `
          CREATE TABLE IF NOT EXISTS ${TABLE} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            model TEXT,
            input TEXT NOT NULL,
            output TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            request_id TEXT,
            api_key_id TEXT,
            webhook TEXT,
            metadata TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER
          );
          CREATE INDEX IF NOT EXISTS ${TABLE}_tenant ON ${TABLE} (tenant, seq);
          CREATE INDEX IF NOT EXISTS ${TABLE}_finished ON ${TABLE} (finished_at);
        `,
    )
  }

  private get db(): SqliteDatabase {
    return this.sqlite.db
  }

  async create(job: NewJob): Promise<JobRecord> {
    if (!job.tenant) throw createError(SQLITE_JOB_STORE, 'tenant is required')
    if (!job.kind) throw createError(SQLITE_JOB_STORE, 'kind is required')
    const id = job.id ?? newId('job')
    const now = Date.now()
    const row = this.run('create', (db) =>
      db
        .prepare<unknown[], JobRow>(
          `INSERT INTO ${TABLE} (id, tenant, kind, state, model, input, request_id, api_key_id, webhook, metadata, created_at, updated_at)
           VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING *`,
        )
        .get(
          id,
          job.tenant,
          job.kind,
          job.model ?? null,
          JSON.stringify(job.input ?? null),
          job.requestId ?? null,
          job.apiKeyId ?? null,
          json(job.webhook),
          json(job.metadata),
          now,
          now,
        ),
    )
    if (!row) throw createError(SQLITE_JOB_STORE, `job ${id} already exists`)
    return toRecord(row)
  }

  async get(tenant: string, id: string): Promise<JobRecord | null> {
    const row = this.run('get', (db) =>
      db
        .prepare<[string, string], JobRow>(`SELECT * FROM ${TABLE} WHERE id = ? AND tenant = ?`)
        .get(id, tenant),
    )
    return row ? toRecord(row) : null
  }

  async getById(id: string): Promise<JobRecord | null> {
    const row = this.run('getById', (db) =>
      db.prepare<[string], JobRow>(`SELECT * FROM ${TABLE} WHERE id = ?`).get(id),
    )
    return row ? toRecord(row) : null
  }

  async transition(id: string, to: JobState, patch: TransitionPatch = {}): Promise<JobRecord> {
    const from = ALLOWED_FROM[to]
    if (!from) throw createError(SQLITE_JOB_STORE, `unknown job state '${to}'`)
    const now = Date.now()
    const row =
      from.length === 0
        ? undefined
        : this.run('transition', (db) =>
            db
              .prepare<unknown[], JobRow>(
                `UPDATE ${TABLE} SET
                   state = ?,
                   updated_at = ?,
                   attempts = attempts + ?,
                   started_at = CASE WHEN ? THEN ? ELSE started_at END,
                   finished_at = CASE WHEN ? THEN ? ELSE finished_at END,
                   output = COALESCE(?, output),
                   error = COALESCE(?, error)
                 WHERE id = ? AND state IN (${from.map(() => '?').join(', ')})
                   AND (? IS NULL OR attempts = ?)
                 RETURNING *`,
              )
              .get(
                to,
                now,
                to === 'running' ? 1 : 0,
                to === 'running' ? 1 : 0,
                now,
                isTerminal(to) ? 1 : 0,
                now,
                json(patch.output),
                json(patch.error),
                id,
                ...from,
                patch.run ?? null,
                patch.run ?? null,
              ),
          )
    if (row) return toRecord(row)
    const current = await this.getById(id)
    if (!current) throw createError(SQLITE_JOB_STORE, `job ${id} not found`)
    checkRun(current, to, patch)
    throw new IllegalTransitionError(id, current.state, to)
  }

  async requestCancel(tenant: string, id: string): Promise<JobRecord | null> {
    const now = Date.now()
    // One statement: a queued job is canceled at once, a running one is flagged for its worker.
    const row = this.run('requestCancel', (db) =>
      db
        .prepare<unknown[], JobRow>(
          `UPDATE ${TABLE} SET
             cancel_requested = 1,
             updated_at = ?,
             finished_at = CASE WHEN state = 'queued' THEN ? ELSE finished_at END,
             state = CASE WHEN state = 'queued' THEN 'canceled' ELSE state END
           WHERE id = ? AND tenant = ? AND state IN ('queued', 'running')
           RETURNING *`,
        )
        .get(now, now, id, tenant),
    )
    if (row) return toRecord(row)
    return this.get(tenant, id) // finished already (unchanged), or not this tenant's
  }

  async list(tenant: string, options: JobListOptions = {}): Promise<JobPage> {
    const limit = options.limit ?? DEFAULT_LIMIT
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT)
      throw createError(SQLITE_JOB_STORE, `limit must be an integer from 1 to ${MAX_LIMIT}, got ${limit}`)
    return this.run('list', (db) => {
      let before = Number.MAX_SAFE_INTEGER
      if (options.after !== undefined) {
        const cursor = db
          .prepare<[string, string], { seq: number }>(`SELECT seq FROM ${TABLE} WHERE id = ? AND tenant = ?`)
          .get(options.after, tenant)
        if (!cursor) return { data: [], hasMore: false }
        before = cursor.seq
      }
      const kind = options.kind !== undefined
      const rows = db
        .prepare<unknown[], JobRow>(
          `SELECT * FROM ${TABLE} WHERE tenant = ? AND seq < ? ${kind ? 'AND kind = ?' : ''}
           ORDER BY seq DESC LIMIT ?`,
        )
        .all(tenant, before, ...(kind ? [options.kind] : []), limit + 1)
      return { data: rows.slice(0, limit).map(toRecord), hasMore: rows.length > limit }
    })
  }

  async purgeFinished(o: PurgeOptions): Promise<string[]> {
    const keep = o.keepKinds ?? []
    const terminal = TERMINAL_STATES.map(() => '?').join(', ')
    return this.run('purgeFinished', (db) =>
      db
        .prepare<unknown[], { id: string }>(
          `DELETE FROM ${TABLE} WHERE seq IN (
             SELECT seq FROM ${TABLE}
             WHERE finished_at < ? AND state IN (${terminal})
               ${keep.length ? `AND kind NOT IN (${keep.map(() => '?').join(', ')})` : ''}
             ORDER BY finished_at LIMIT ?
           ) RETURNING id`,
        )
        .all(o.finishedBefore, ...TERMINAL_STATES, ...keep, o.limit ?? 1000)
        .map((r) => r.id),
    )
  }

  async close(): Promise<void> {
    this.sqlite.close()
  }

  private run<T>(op: string, fn: (db: SqliteDatabase) => T): T {
    return this.sqlite.run(op, fn)
  }
}
