/**
 * DeliveryLog on SQLite (core/ports/delivery-log.ts): table
 * `webhook_deliveries` in the local profile's file, shared with the queue and
 * the job store, so every worker process on the host sends from one log.
 * (Cloud profiles keep the log in the shared store: object-delivery-log.ts.)
 *
 * The insert ignores an id already logged (add-once by webhook-id). Claiming
 * is one UPDATE … RETURNING that moves due rows to `delivering` with a lease
 * (next_attempt_at = now + lease): two dispatchers never send the same
 * attempt, and a dispatcher that dies mid-attempt leaves a row that is due
 * again when its lease ends.
 */
import type {
  AttemptOutcome,
  Delivery,
  DeliveryLog,
  DeliveryStatus,
  NewDelivery,
  WebhookEvent,
} from '../ports/delivery-log.js'
import { LazySqlite } from './sqlite.js'

export const SQLITE_DELIVERY_LOG = 'sqlite-delivery-log'

interface Row {
  id: string
  job_id: string
  request_id: string | null
  tenant: string
  event: WebhookEvent
  url: string
  payload: string
  attempt: number
  status: DeliveryStatus
  response_code: number | null
  last_error: string | null
  next_attempt_at: number
  created_at: number
  updated_at: number
}

const toDelivery = (r: Row): Delivery => ({
  id: r.id,
  jobId: r.job_id,
  requestId: r.request_id,
  tenant: r.tenant,
  event: r.event,
  url: r.url,
  payload: r.payload,
  attempt: r.attempt,
  status: r.status,
  responseCode: r.response_code,
  lastError: r.last_error,
  nextAttemptAt: r.next_attempt_at,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
})

const DUE = `status IN ('pending', 'delivering') AND next_attempt_at <= ?`

export class SqliteDeliveryLog implements DeliveryLog {
  readonly name = SQLITE_DELIVERY_LOG
  private readonly sqlite: LazySqlite

  constructor(options: { file: string }) {
    // The table keeps its pre-port name: logs written before stay readable.
    this.sqlite = new LazySqlite(
      SQLITE_DELIVERY_LOG,
      options.file,
      `
      CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        request_id TEXT,
        tenant TEXT NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        response_code INTEGER,
        last_error TEXT,
        next_attempt_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
      CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id);
    `,
    )
  }

  async enqueue(d: NewDelivery, now = Date.now()): Promise<boolean> {
    return this.sqlite.run(
      'enqueue',
      (db) =>
        db
          .prepare(
            `INSERT OR IGNORE INTO webhook_deliveries
               (id, job_id, request_id, tenant, event, url, payload, attempt, status, next_attempt_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'pending', ?, ?, ?)`,
          )
          .run(d.id, d.jobId, d.requestId, d.tenant, d.event, d.url, d.payload, now, now, now).changes === 1,
    )
  }

  async claimDue(limit: number, leaseMs: number, now = Date.now()): Promise<Delivery[]> {
    return this.sqlite.run('claimDue', (db) =>
      db
        .prepare<[number, number, number, number], Row>(
          `UPDATE webhook_deliveries SET status = 'delivering', next_attempt_at = ?, updated_at = ?
           WHERE id IN (SELECT id FROM webhook_deliveries WHERE ${DUE} ORDER BY next_attempt_at LIMIT ?)
           RETURNING *`,
        )
        .all(now + leaseMs, now, now, limit)
        .map(toDelivery),
    )
  }

  async claim(id: string, leaseMs: number, now = Date.now()): Promise<Delivery | null> {
    return this.sqlite.run('claim', (db) => {
      const row = db
        .prepare<[number, number, string, number], Row>(
          `UPDATE webhook_deliveries SET status = 'delivering', next_attempt_at = ?, updated_at = ?
           WHERE id = ? AND ${DUE} RETURNING *`,
        )
        .get(now + leaseMs, now, id, now)
      return row ? toDelivery(row) : null
    })
  }

  async recordAttempt(id: string, outcome: AttemptOutcome, now = Date.now()): Promise<void> {
    this.sqlite.run('recordAttempt', (db) =>
      db
        .prepare(
          `UPDATE webhook_deliveries
           SET attempt = attempt + 1, status = ?, response_code = ?, last_error = ?, next_attempt_at = ?, updated_at = ?
           WHERE id = ?`,
        )
        .run(outcome.status, outcome.responseCode, outcome.error, outcome.nextAttemptAt ?? now, now, id),
    )
  }

  async get(id: string): Promise<Delivery | null> {
    const row = this.sqlite.run('get', (db) =>
      db.prepare<[string], Row>('SELECT * FROM webhook_deliveries WHERE id = ?').get(id),
    )
    return row ? toDelivery(row) : null
  }

  async listByJob(jobId: string): Promise<Delivery[]> {
    return this.sqlite.run('listByJob', (db) =>
      db
        .prepare<[string], Row>('SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id')
        .all(jobId)
        .map(toDelivery),
    )
  }

  async nextDueAt(): Promise<number | null> {
    const row = this.sqlite.run('nextDueAt', (db) =>
      db
        .prepare<[], { t: number | null }>(
          `SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries WHERE status IN ('pending', 'delivering')`,
        )
        .get(),
    )
    return row?.t ?? null
  }

  async prune(before: number): Promise<number> {
    return this.sqlite.run(
      'prune',
      (db) =>
        db
          .prepare(
            `DELETE FROM webhook_deliveries WHERE status IN ('succeeded', 'failed') AND updated_at < ?`,
          )
          .run(before).changes,
    )
  }

  async close(): Promise<void> {
    this.sqlite.close()
  }
}
