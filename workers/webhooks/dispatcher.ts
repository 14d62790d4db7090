/**
 * Webhook dispatcher: turns job events into Standard Webhooks deliveries and
 * sends them from the durable log (the DeliveryLog port: the SQLite file in
 * the local profile, objects in the shared store in cloud profiles) until
 * they succeed or the retry schedule is spent. Every dispatcher over one log
 * sends what any of them (or the dead-letter function) scheduled: a retry
 * due hours ahead survives the pod that scheduled it.
 *
 * - Events: `start` (job started), `output` (the handler published output),
 *   `completed` (any terminal state: succeeded, failed, canceled), filtered by
 *   the job's `webhook.eventsFilter` (empty: all), as Replicate's webhooks.
 * - Body: the job object as the API returns it (payload.ts `toJobView`); the
 *   event name is also sent as the `pgpt-webhook-event` header.
 * - Headers: `webhook-id` (fixed per event, same on every retry),
 *   `webhook-timestamp` (seconds, per attempt), `webhook-signature` (v1,
 *   HMAC-SHA256 with the tenant's `whsec_` secret, secrets.ts), signed by the
 *   `standardwebhooks` library.
 * - Retries: after a non-2xx, a timeout or a network error, wait the next step
 *   of the schedule (default as Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h),
 *   ±jitter; then the delivery fails for good. A URL the SSRF guard refuses
 *   fails at once (outcome `refused`).
 *
 * References: standardwebhooks.com spec; Svix retry schedule docs.
 */
import { createHash } from 'node:crypto'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { Delivery, DeliveryLog, NewDelivery, WebhookEvent } from '../../core/ports/delivery-log.js'
import type { JobEvent } from '../../core/ports/events.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { sleep } from '../backoff.js'
import { attemptDelivery } from './deliver.js'
import { toJobView } from './payload.js'
import type { ResolveAll } from './ssrf.js'

export const SVIX_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]

export interface WebhookDispatcherOptions {
  log: DeliveryLog
  /** The `whsec_…` secret that signs a tenant's webhooks. */
  secretFor: (tenant: string) => string
  /** Waits before retry 1, 2, … in ms; attempts in all = length + 1. Default SVIX_SCHEDULE_MS. */
  retryScheduleMs?: number[]
  /** ± fraction applied to each wait. Default 0.2. */
  jitter?: number
  /** Per attempt, ms (PGPT_WEBHOOK_TIMEOUT_MS). Default 10 000. */
  timeoutMs?: number
  /** Allow loopback/private targets (local profile only). */
  allowPrivate?: boolean
  resolve?: ResolveAll
  /** How often the log is checked for deliveries other processes added. Default 1 000 ms. */
  pollIntervalMs?: number
  /** Deliveries sent at once. Default 8. */
  concurrency?: number
  /** Finished deliveries are kept this long in the log, ms. Default 7 days. */
  retentionMs?: number
  logger: Logger
  metrics?: Metrics
}

/** Which webhook event a job event is, if any. */
export function webhookEventOf(type: JobEvent['type']): WebhookEvent | null {
  if (type === 'start' || type === 'output') return type
  if (type === 'completed' || type === 'failed' || type === 'canceled') return 'completed'
  return null
}

/** The webhook-id of one event of one job: stable across retries, redeliveries and processes. */
export function webhookId(jobId: string, event: WebhookEvent, seq?: number): string {
  const key = event === 'output' ? `${jobId}:output:${seq}` : `${jobId}:${event}`
  return `msg_${createHash('sha256').update(key).digest('base64url').slice(0, 27)}`
}

export class WebhookDispatcher {
  private readonly schedule: number[]
  private readonly jitter: number
  private readonly timeoutMs: number
  private readonly pollIntervalMs: number
  private readonly concurrency: number
  private readonly retentionMs: number
  private lastPrune = 0
  private stopped = true
  private loop: Promise<void> | undefined
  private wakeCtrl = new AbortController()

  constructor(private readonly o: WebhookDispatcherOptions) {
    this.schedule = o.retryScheduleMs ?? SVIX_SCHEDULE_MS
    this.jitter = o.jitter ?? 0.2
    this.timeoutMs = o.timeoutMs ?? 10_000
    this.pollIntervalMs = o.pollIntervalMs ?? 1_000
    this.concurrency = o.concurrency ?? 8
    this.retentionMs = o.retentionMs ?? 7 * 24 * 3_600_000
    if (this.schedule.some((ms) => !(ms >= 0)))
      throw new Error('WebhookDispatcher: retryScheduleMs must be >= 0')
    if (this.jitter < 0 || this.jitter >= 1) throw new Error('WebhookDispatcher: jitter must be in [0, 1)')
    if (this.concurrency < 1) throw new Error('WebhookDispatcher: concurrency must be >= 1')
  }

  /** Hook for runWorker's `onJobEvent`: log a delivery when the job has a webhook that wants this event. */
  readonly onJobEvent = async (job: JobRecord, event: JobEvent): Promise<void> => {
    await this.logEvent(job, event)
  }

  /**
   * Writes the delivery of a job event to the log (when the job's webhook wants
   * it) and resolves its webhook-id, or null when no webhook is due. Rejects
   * when the log cannot be written: the caller decides whether to try again.
   */
  async logEvent(job: JobRecord, event: JobEvent): Promise<string | null> {
    const d = deliveryOf(job, event)
    if (!d) return null
    const added = await this.o.log.enqueue(d)
    this.o.logger.debug(
      { requestId: job.requestId, jobId: job.id, webhookId: d.id, event: d.event, added },
      added ? 'webhook logged' : 'webhook already logged for this event',
    )
    this.wake()
    return d.id
  }

  /**
   * Attempts one delivery now if it is due (it is leased, as a pass would);
   * a failed attempt is scheduled in the log like any other, for whichever
   * dispatcher looks next. Resolves whether an attempt was made.
   */
  async deliverNow(id: string): Promise<boolean> {
    const d = await this.o.log.claim(id, this.leaseMs())
    if (d) await this.attempt(d)
    return d !== null
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.loop = this.run()
  }

  /** Stops after the attempts in progress end (each bounded by timeoutMs). */
  async stop(): Promise<void> {
    this.stopped = true
    this.wake()
    await this.loop
  }

  private wake(): void {
    this.wakeCtrl.abort()
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.wakeCtrl = new AbortController()
      try {
        while ((await this.deliverDue()) > 0 && !this.stopped) {}
      } catch (err) {
        this.o.logger.error({ err }, 'webhook dispatcher pass failed')
      }
      if (this.stopped) break
      await this.pruneHourly()
      const next = await this.o.log.nextDueAt().catch(() => null)
      // Due yet nothing claimed (another dispatcher holds it, or a stale index entry): poll, don't spin.
      const wait =
        next === null || next <= Date.now()
          ? this.pollIntervalMs
          : Math.min(this.pollIntervalMs, next - Date.now())
      await sleep(wait, this.wakeCtrl.signal)
    }
  }

  private async pruneHourly(): Promise<void> {
    if (Date.now() - this.lastPrune < 3_600_000) return
    this.lastPrune = Date.now()
    const n = await this.o.log.prune(Date.now() - this.retentionMs).catch((err) => {
      this.o.logger.warn({ err }, 'pruning webhook deliveries failed')
      return 0
    })
    if (n) this.o.logger.info({ deleted: n }, 'pruned finished webhook deliveries')
  }

  /** An attempt's lease: longer than the attempt can take, so it never ends while one is in flight. */
  private leaseMs(): number {
    return this.timeoutMs + 30_000
  }

  /** One pass: send every delivery due now (up to `concurrency` per claim). Returns how many were attempted. */
  async deliverDue(): Promise<number> {
    const due = await this.o.log.claimDue(this.concurrency, this.leaseMs())
    await Promise.all(due.map((d) => this.attempt(d)))
    return due.length
  }

  private async attempt(d: Delivery): Promise<void> {
    try {
      await this.attemptAndRecord(d)
    } catch (err) {
      // The log could not record the outcome: the lease ends and the delivery is due again
      // (the receiver may see this attempt twice, with the same webhook-id).
      this.o.logger.error({ err, webhookId: d.id, jobId: d.jobId }, 'webhook attempt not recorded')
    }
  }

  private async attemptAndRecord(d: Delivery): Promise<void> {
    const n = d.attempt + 1
    const log = this.o.logger.child({
      requestId: d.requestId ?? undefined,
      jobId: d.jobId,
      webhookId: d.id,
      event: d.event,
      attempt: n,
    })
    const r = await attemptDelivery(d, {
      secret: this.o.secretFor(d.tenant),
      timeoutMs: this.timeoutMs,
      allowPrivate: this.o.allowPrivate,
      resolve: this.o.resolve,
    })
    if (r.outcome === 'delivered') {
      await this.o.log.recordAttempt(d.id, { status: 'succeeded', responseCode: r.status, error: null })
      this.end('success', n)
      log.info({ status: r.status }, 'webhook delivered')
      return
    }
    if (r.outcome === 'refused') {
      await this.o.log.recordAttempt(d.id, { status: 'failed', responseCode: null, error: r.error })
      this.end('refused', n)
      log.warn({ url: d.url, reason: r.error }, 'webhook refused by the SSRF guard')
      return
    }
    const { status, error } = r
    if (n > this.schedule.length) {
      await this.o.log.recordAttempt(d.id, { status: 'failed', responseCode: status, error })
      this.end('failed', n)
      log.warn({ status, error }, 'webhook failed for good: retries exhausted')
      return
    }
    const base = this.schedule[n - 1]
    const wait = Math.round(base * (1 - this.jitter + Math.random() * 2 * this.jitter))
    await this.o.log.recordAttempt(d.id, {
      status: 'pending',
      responseCode: status,
      error,
      nextAttemptAt: Date.now() + wait,
    })
    this.o.metrics?.webhookDeliveries.inc({ outcome: 'retry' })
    log.info({ status, error, retryInMs: wait }, 'webhook attempt failed; will retry')
  }

  private end(outcome: 'success' | 'failed' | 'refused', attempts: number): void {
    this.o.metrics?.webhookDeliveries.inc({ outcome })
    this.o.metrics?.webhookAttempts.observe(attempts)
  }
}

/** The delivery a job event makes, when the job's webhook wants the event. */
export function deliveryOf(job: JobRecord, event: JobEvent): NewDelivery | null {
  const target = job.webhook
  const kind = webhookEventOf(event.type)
  if (!target || !kind) return null
  if (target.eventsFilter.length && !target.eventsFilter.includes(kind)) return null
  const body = toJobView(job, event.type === 'output' ? { output: event.data } : {})
  return {
    id: webhookId(job.id, kind, event.seq),
    jobId: job.id,
    requestId: job.requestId ?? null,
    tenant: job.tenant,
    event: kind,
    url: target.url,
    payload: JSON.stringify(body),
  }
}
