/**
 * Durable local Queue on SQLite: the embedded default of the Queue port
 * (core/ports/queue.ts), with the semantics of an SQS standard queue and its
 * redrive policy. The local edge and worker processes open the same file;
 * every state change is one statement or one IMMEDIATE transaction, so two
 * processes never deliver one message twice at the same time.
 *
 * One table holds every queue's messages, the dead-letter queue `<name>-dlq`
 * included. A row is
 *   visible   when visible_at <= now,
 *   in flight when visible_at >  now and it has been received,
 *   delayed   when visible_at >  now and it has never been received.
 * Each receive writes a fresh receipt handle; ack, extend and release match on
 * it, so a handle from an earlier delivery no longer touches the message.
 * Each receive also stamps `received_at`: an extend that would hold the
 * delivery beyond `maxHoldSeconds` from it is refused (HoldLimitError), as
 * SQS refuses one beyond 12 hours.
 * The receive that would be number maxReceiveCount + 1 moves the message to
 * the dead-letter queue instead (as SQS's redrive does).
 *
 * References: SQS developer guide (visibility timeout, dead-letter queues,
 * long polling); sqs-consumer `src/consumer.ts`.
 */
import { randomBytes } from 'node:crypto'
import { newId } from '../ids.js'
import {
  HoldLimitError,
  type Queue,
  type QueueMessage,
  type QueueStats,
  type QueueWithDeadLetter,
  type ReceiveOptions,
  type SendOptions,
  SQS_MAX_HOLD_SECONDS,
} from '../ports/queue.js'
import { createError } from './adapter-error.js'
import { openSqlite, type SqliteDatabase } from './sqlite.js'

export const LOCAL_QUEUE = 'local-queue'

export interface LocalQueueOptions {
  /** SQLite file; created with its folder if missing. Shared with other adapters and processes. */
  file: string
  /** Queue name; the dead-letter queue is `<name>-dlq`. */
  name: string
  /** Default time a received message stays invisible, in seconds (0–43200). */
  visibilityTimeoutSeconds: number
  /** Receives after which a message moves to the dead-letter queue (1–1000). */
  maxReceiveCount: number
  /** How often a long poll looks at the table, in ms. Default 75. */
  pollIntervalMs?: number
  /** Longest hold of a delivery from its receive, seconds (1–43200). Default 43200, SQS's; tests use a few seconds. */
  maxHoldSeconds?: number
}

const TABLE = 'pgpt_queue_messages'

interface Row {
  id: string
  body: string
  sent_at: number
  receive_count: number
}

/** The SQLite connection shared by a queue and its dead-letter queue, opened on first use. */
class Store {
  private db: SqliteDatabase | undefined
  private closed = false

  constructor(private readonly file: string) {}

  get(): SqliteDatabase {
    if (this.closed) throw createError(LOCAL_QUEUE, 'queue is closed')
    if (!this.db) {
      try {
        const db = openSqlite(this.file)
        db.exec(`
          CREATE TABLE IF NOT EXISTS ${TABLE} (
            id TEXT PRIMARY KEY,
            queue TEXT NOT NULL,
            body TEXT NOT NULL,
            sent_at INTEGER NOT NULL,
            visible_at INTEGER NOT NULL,
            receive_count INTEGER NOT NULL DEFAULT 0,
            receipt TEXT,
            received_at INTEGER
          );
          CREATE INDEX IF NOT EXISTS ${TABLE}_ready ON ${TABLE} (queue, visible_at);
          CREATE UNIQUE INDEX IF NOT EXISTS ${TABLE}_receipt ON ${TABLE} (receipt);
        `)
        addReceivedAt(db)
        this.db = db
      } catch (cause) {
        throw createError(LOCAL_QUEUE, `cannot open ${this.file}`, { cause })
      }
    }
    return this.db
  }

  close() {
    this.closed = true
    this.db?.close()
    this.db = undefined
  }
}

/**
 * Files written before the hold cap lack `received_at`: added in one IMMEDIATE
 * transaction, so two processes opening the file at once add it once. Rows
 * received before have it NULL, and their extends are not capped.
 */
function addReceivedAt(db: SqliteDatabase): void {
  db.transaction(() => {
    const columns = db.prepare<[], { name: string }>(`PRAGMA table_info(${TABLE})`).all()
    if (!columns.some((c) => c.name === 'received_at'))
      db.exec(`ALTER TABLE ${TABLE} ADD COLUMN received_at INTEGER`)
  }).immediate()
}

function checkRange(what: string, value: number, min: number, max: number) {
  if (!Number.isInteger(value) || value < min || value > max)
    throw createError(LOCAL_QUEUE, `${what} must be an integer from ${min} to ${max}, got ${value}`)
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })

class LocalQueue implements Queue {
  readonly name: string

  constructor(
    private readonly store: Store,
    private readonly queueName: string,
    private readonly visibilityTimeoutSeconds: number,
    /** Infinity for a dead-letter queue. */
    private readonly maxReceiveCount: number,
    private readonly deadLetterName: string | undefined,
    private readonly pollIntervalMs: number,
    readonly maxHoldSeconds: number,
  ) {
    this.name = queueName
  }

  async send(body: string, options: SendOptions = {}): Promise<{ id: string }> {
    const delay = options.delaySeconds ?? 0
    checkRange('delaySeconds', delay, 0, 900)
    const id = newId('msg')
    const now = Date.now()
    this.run('send', (db) =>
      db
        .prepare(`INSERT INTO ${TABLE} (id, queue, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?)`)
        .run(id, this.queueName, body, now, now + delay * 1000),
    )
    return { id }
  }

  async receive(options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const max = options.maxMessages ?? 1
    const wait = options.waitTimeSeconds ?? 0
    const visibility = options.visibilityTimeoutSeconds ?? this.visibilityTimeoutSeconds
    checkRange('maxMessages', max, 1, 10)
    checkRange('waitTimeSeconds', wait, 0, 20)
    checkRange('visibilityTimeoutSeconds', visibility, 0, this.maxHoldSeconds)
    const deadline = Date.now() + wait * 1000
    for (;;) {
      if (options.signal?.aborted) return []
      const got = this.tryReceive(max, visibility)
      const left = deadline - Date.now()
      if (got.length > 0 || left <= 0) return got
      await sleep(Math.min(this.pollIntervalMs, left), options.signal)
    }
  }

  /** One IMMEDIATE transaction: pick visible rows, dead-letter the exhausted ones, lease the rest. */
  private tryReceive(max: number, visibilitySeconds: number): QueueMessage[] {
    return this.run('receive', (db) => {
      const pick = db.prepare<[string, number, number], Row>(
        `SELECT id, body, sent_at, receive_count FROM ${TABLE}
         WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, rowid LIMIT ?`,
      )
      const lease = db.prepare(
        `UPDATE ${TABLE} SET receive_count = receive_count + 1, receipt = ?, visible_at = ?, received_at = ?
         WHERE id = ?`,
      )
      const deadLetter = db.prepare(
        `UPDATE ${TABLE} SET queue = ?, receive_count = 0, receipt = NULL, visible_at = ? WHERE id = ?`,
      )
      return db
        .transaction(() => {
          const now = Date.now()
          const out: QueueMessage[] = []
          for (;;) {
            const rows = pick.all(this.queueName, now, max - out.length)
            if (rows.length === 0) break
            for (const row of rows) {
              if (row.receive_count >= this.maxReceiveCount && this.deadLetterName) {
                deadLetter.run(this.deadLetterName, now, row.id)
                continue
              }
              const receiptHandle = `${row.id}.${randomBytes(12).toString('base64url')}`
              lease.run(receiptHandle, now + visibilitySeconds * 1000, now, row.id)
              out.push({
                id: row.id,
                receiptHandle,
                body: row.body,
                receiveCount: row.receive_count + 1,
                sentAt: row.sent_at,
                receivedAt: now,
              })
            }
            if (out.length >= max) break
          }
          return out
        })
        .immediate()
    })
  }

  async extend(receiptHandle: string, seconds: number): Promise<void> {
    checkRange('seconds', seconds, 0, 43200)
    const until = Date.now() + seconds * 1000
    const outcome = this.run('extend', (db) =>
      db
        .transaction(() => {
          const changed = db
            .prepare(
              `UPDATE ${TABLE} SET visible_at = ? WHERE queue = ? AND receipt = ?
               AND (received_at IS NULL OR ? <= received_at + ?)`,
            )
            .run(until, this.queueName, receiptHandle, until, this.maxHoldSeconds * 1000).changes
          if (changed) return 'extended'
          const held = db
            .prepare(`SELECT 1 FROM ${TABLE} WHERE queue = ? AND receipt = ?`)
            .get(this.queueName, receiptHandle)
          return held ? 'beyond_cap' : 'stale'
        })
        .immediate(),
    )
    if (outcome === 'beyond_cap') throw new HoldLimitError(this.queueName, this.maxHoldSeconds)
    if (outcome === 'stale')
      throw createError(LOCAL_QUEUE, `${this.queueName}: receipt handle is stale or its message is gone`)
  }

  async ack(receiptHandle: string): Promise<void> {
    this.run('ack', (db) =>
      db.prepare(`DELETE FROM ${TABLE} WHERE queue = ? AND receipt = ?`).run(this.queueName, receiptHandle),
    )
  }

  async release(receiptHandle: string): Promise<void> {
    this.run('release', (db) =>
      db
        .prepare(`UPDATE ${TABLE} SET visible_at = ? WHERE queue = ? AND receipt = ?`)
        .run(Date.now(), this.queueName, receiptHandle),
    )
  }

  async stats(): Promise<QueueStats> {
    const now = Date.now()
    const row = this.run('stats', (db) =>
      db
        .prepare<[number, number, number, string], Record<string, number | null>>(
          `SELECT
             COALESCE(SUM(visible_at <= ?), 0) AS visible,
             COALESCE(SUM(visible_at > ? AND receive_count > 0), 0) AS inFlight,
             COALESCE(SUM(visible_at > ? AND receive_count = 0), 0) AS delayed,
             MIN(sent_at) AS oldest
           FROM ${TABLE} WHERE queue = ?`,
        )
        .get(now, now, now, this.queueName),
    )
    const oldest = row?.oldest
    return {
      visible: Number(row?.visible ?? 0),
      inFlight: Number(row?.inFlight ?? 0),
      delayed: Number(row?.delayed ?? 0),
      oldestAgeSeconds: oldest == null ? 0 : Math.max(0, (now - oldest) / 1000),
    }
  }

  /** Closes the connection shared with the other queue of the pair. */
  async close(): Promise<void> {
    this.store.close()
  }

  private run<T>(op: string, fn: (db: SqliteDatabase) => T): T {
    const db = this.store.get()
    try {
      return fn(db)
    } catch (cause) {
      throw createError(LOCAL_QUEUE, `${this.queueName}: ${op} failed`, { cause })
    }
  }
}

export function openLocalQueue(options: LocalQueueOptions): QueueWithDeadLetter {
  const { file, name, visibilityTimeoutSeconds, maxReceiveCount } = options
  const pollIntervalMs = options.pollIntervalMs ?? 75
  const maxHoldSeconds = options.maxHoldSeconds ?? SQS_MAX_HOLD_SECONDS
  if (!file) throw createError(LOCAL_QUEUE, 'file is required')
  if (!/^[A-Za-z0-9_-]{1,76}$/.test(name))
    throw createError(LOCAL_QUEUE, `name must be 1-76 of [A-Za-z0-9_-] (as SQS), got '${name}'`)
  checkRange('maxHoldSeconds', maxHoldSeconds, 1, SQS_MAX_HOLD_SECONDS)
  checkRange('visibilityTimeoutSeconds', visibilityTimeoutSeconds, 0, maxHoldSeconds)
  checkRange('maxReceiveCount', maxReceiveCount, 1, 1000)
  checkRange('pollIntervalMs', pollIntervalMs, 1, 10_000)
  const store = new Store(file)
  const dlqName = `${name}-dlq`
  return {
    queue: new LocalQueue(
      store,
      name,
      visibilityTimeoutSeconds,
      maxReceiveCount,
      dlqName,
      pollIntervalMs,
      maxHoldSeconds,
    ),
    deadLetter: new LocalQueue(
      store,
      dlqName,
      visibilityTimeoutSeconds,
      Number.POSITIVE_INFINITY,
      undefined,
      pollIntervalMs,
      maxHoldSeconds,
    ),
    maxReceiveCount,
  }
}
