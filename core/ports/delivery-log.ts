/**
 * DeliveryLog port: the durable log of webhook deliveries the workers'
 * WebhookDispatcher (workers/webhooks/dispatcher.ts) sends from. A delivery is
 * written before its first attempt and updated after each one, so any
 * dispatcher sharing the log (another process, another pod, after a restart
 * or a scale-in) picks up every delivery still due.
 *
 * Adapters: SQLite (the local profile's file, sqlite-delivery-log.ts) and
 * objects in the shared store (cloud profiles, object-delivery-log.ts).
 *
 * - `enqueue` is add-once by id (the `webhook-id`): a job run twice, or a
 *   dead-letter handler and a worker logging the same event, yield one
 *   delivery.
 * - `claimDue` / `claim` lease a due delivery (status `delivering`,
 *   `nextAttemptAt` = lease end) atomically: two dispatchers never send the
 *   same attempt, and one that dies mid-attempt leaves a delivery due again
 *   when its lease ends.
 */

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

export type NewDelivery = Pick<
  Delivery,
  'id' | 'jobId' | 'requestId' | 'tenant' | 'event' | 'url' | 'payload'
>

export interface AttemptOutcome {
  /** succeeded, failed for good, or pending again at `nextAttemptAt`. */
  status: 'succeeded' | 'failed' | 'pending'
  responseCode: number | null
  error: string | null
  /** Epoch ms of the next attempt (status pending). Default: now. */
  nextAttemptAt?: number
}

export interface DeliveryLog {
  readonly name: string
  /** Log a new delivery, due at `now`. Resolves false when this id was already logged. */
  enqueue(d: NewDelivery, now?: number): Promise<boolean>
  /** Lease up to `limit` due deliveries (pending or delivering with an ended lease) for `leaseMs`. */
  claimDue(limit: number, leaseMs: number, now?: number): Promise<Delivery[]>
  /** Lease one delivery if it is due (as claimDue); null when it is not (or is unknown). */
  claim(id: string, leaseMs: number, now?: number): Promise<Delivery | null>
  /** Record an attempt's outcome: attempt + 1, and the new status. */
  recordAttempt(id: string, outcome: AttemptOutcome, now?: number): Promise<void>
  get(id: string): Promise<Delivery | null>
  /** A job's deliveries, oldest first (operations). */
  listByJob(jobId: string): Promise<Delivery[]>
  /** Epoch ms of the earliest scheduled attempt (or lease end), for the dispatcher's sleep; may be early. */
  nextDueAt(): Promise<number | null>
  /** Delete finished deliveries (succeeded or failed) last updated before `before`. Resolves how many. */
  prune(before: number): Promise<number>
  close?(): Promise<void>
}
