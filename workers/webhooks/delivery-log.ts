/**
 * The durable webhook delivery log: table `webhook_deliveries` in the local
 * SQLite file (shared with the queue and job store in the local profile).
 * A delivery is written before its first attempt and updated after each one,
 * so a dispatcher that restarts picks up every delivery still due.
 *
 * A row's `id` is the `webhook-id` header: fixed when the event happens and
 * sent unchanged on every retry. It is derived from (job, event[, seq]), and
 * the insert ignores an id already logged, so a job run twice (a worker died
 * mid-job) still yields one webhook-id per event.
 *
 * Claiming is one UPDATE … RETURNING that moves due rows to `delivering` with
 * a lease (next_attempt_at = now + lease): two dispatchers never send the same
 * attempt, and a dispatcher that dies mid-attempt leaves a row that is due
 * again when its lease ends.
 */
import { openSqlite, type SqliteDatabase } from '../../core/adapters/sqlite.js'

export type DeliveryStatus = 'pending' | 'delivering' | 'succeeded' | 'failed'
export type WebhookEvent = 'start' | 'output' | 'completed'

export interface Delivery {
  /** The webhook-id. */
  id: string
  jobId: string
  requestId: string | null
  tenant: string
  event: WebhookEvent
  url: string
  /** The JSON body, fixed at enqueue so every retry sends the same bytes. */
  payload: string
  /** Attempts made so far. */
  attempt: number
  status: DeliveryStatus
  responseCode: number | null
  lastError: string | null
  /** Epoch ms of the next attempt (or lease end while delivering). */
  nextAttemptAt: number
  createdAt: number
  updatedAt: number
}

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

export class DeliveryLog {
  private readonly db: SqliteDatabase

  constructor(options: { file: string }) {
    this.db = openSqlite(options.file)
    this.db.exec(`
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
    `)
  }

  /** Log a new delivery, due now. Returns false when this webhook-id was already logged. */
  enqueue(
    d: Pick<Delivery, 'id' | 'jobId' | 'requestId' | 'tenant' | 'event' | 'url' | 'payload'>,
    now = Date.now(),
  ): boolean {
    return (
      this.db
        .prepare(
          `INSERT OR IGNORE INTO webhook_deliveries
             (id, job_id, request_id, tenant, event, url, payload, attempt, status, next_attempt_at, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'pending', ?, ?, ?)`,
        )
        .run(d.id, d.jobId, d.requestId, d.tenant, d.event, d.url, d.payload, now, now, now).changes === 1
    )
  }

  /** Lease up to `limit` due deliveries for `leaseMs`. */
  claimDue(limit: number, leaseMs: number, now = Date.now()): Delivery[] {
    const rows = this.db
      .prepare<[number, number, number, number], Row>(
        `UPDATE webhook_deliveries SET status = 'delivering', next_attempt_at = ?, updated_at = ?
         WHERE id IN (
           SELECT id FROM webhook_deliveries
           WHERE status IN ('pending', 'delivering') AND next_attempt_at <= ?
           ORDER BY next_attempt_at LIMIT ?)
         RETURNING *`,
      )
      .all(now + leaseMs, now, now, limit)
    return rows.map(toDelivery)
  }

  /** Record an attempt's outcome: succeeded, failed for good, or pending again at `nextAttemptAt`. */
  recordAttempt(
    id: string,
    outcome: {
      status: 'succeeded' | 'failed' | 'pending'
      responseCode: number | null
      error: string | null
      nextAttemptAt?: number
    },
    now = Date.now(),
  ): void {
    this.db
      .prepare(
        `UPDATE webhook_deliveries
         SET attempt = attempt + 1, status = ?, response_code = ?, last_error = ?, next_attempt_at = ?, updated_at = ?
         WHERE id = ?`,
      )
      .run(outcome.status, outcome.responseCode, outcome.error, outcome.nextAttemptAt ?? now, now, id)
  }

  get(id: string): Delivery | null {
    const row = this.db.prepare<[string], Row>('SELECT * FROM webhook_deliveries WHERE id = ?').get(id)
    return row ? toDelivery(row) : null
  }

  listByJob(jobId: string): Delivery[] {
    return this.db
      .prepare<[string], Row>('SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id')
      .all(jobId)
      .map(toDelivery)
  }

  /** Epoch ms of the earliest pending attempt, for the dispatcher's sleep. */
  nextDueAt(): number | null {
    const row = this.db
      .prepare<[], { t: number | null }>(
        `SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries WHERE status IN ('pending', 'delivering')`,
      )
      .get()
    return row?.t ?? null
  }

  /** Delete finished deliveries (succeeded or failed) last updated before `before` (epoch ms). Returns how many. */
  prune(before: number): number {
    return this.db
      .prepare(`DELETE FROM webhook_deliveries WHERE status IN ('succeeded', 'failed') AND updated_at < ?`)
      .run(before).changes
  }

  close(): void {
    this.db.close()
  }
}
