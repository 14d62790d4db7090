/**
 * Webhook dispatcher: turns job events into Standard Webhooks deliveries and
 * sends them from the durable log (delivery-log.ts) until they succeed or the
 * retry schedule is spent.
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
import type { JobEvent } from '../../core/ports/events.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { sleep } from '../backoff.js'
import { attemptDelivery } from './deliver.js'
import type { Delivery, DeliveryLog, WebhookEvent } from './delivery-log.js'
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
  readonly onJobEvent = (job: JobRecord, event: JobEvent): void => {
    const target = job.webhook
    const kind = webhookEventOf(event.type)
    if (!target || !kind) return
    if (target.eventsFilter.length && !target.eventsFilter.includes(kind)) return
    const id = webhookId(job.id, kind, event.seq)
    const body = toJobView(job, event.type === 'output' ? { output: event.data } : {})
    const added = this.o.log.enqueue({
      id,
      jobId: job.id,
      requestId: job.requestId ?? null,
      tenant: job.tenant,
      event: kind,
      url: target.url,
      payload: JSON.stringify(body),
    })
    this.o.logger.debug(
      { requestId: job.requestId, jobId: job.id, webhookId: id, event: kind, added },
      added ? 'webhook logged' : 'webhook already logged for this event',
    )
    this.wake()
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
      this.pruneHourly()
      const next = safe(() => this.o.log.nextDueAt())
      const wait =
        next === null ? this.pollIntervalMs : Math.min(this.pollIntervalMs, Math.max(0, next - Date.now()))
      await sleep(wait, this.wakeCtrl.signal)
    }
  }

  private pruneHourly(): void {
    if (Date.now() - this.lastPrune < 3_600_000) return
    this.lastPrune = Date.now()
    const n = safe(() => this.o.log.prune(Date.now() - this.retentionMs))
    if (n) this.o.logger.info({ deleted: n }, 'pruned finished webhook deliveries')
  }

  /** One pass: send every delivery due now (up to `concurrency` per claim). Returns how many were attempted. */
  async deliverDue(): Promise<number> {
    const due = this.o.log.claimDue(this.concurrency, this.timeoutMs + 30_000)
    await Promise.all(due.map((d) => this.attempt(d)))
    return due.length
  }

  private async attempt(d: Delivery): Promise<void> {
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
      this.o.log.recordAttempt(d.id, { status: 'succeeded', responseCode: r.status, error: null })
      this.end('success', n)
      log.info({ status: r.status }, 'webhook delivered')
      return
    }
    if (r.outcome === 'refused') {
      this.o.log.recordAttempt(d.id, { status: 'failed', responseCode: null, error: r.error })
      this.end('refused', n)
      log.warn({ url: d.url, reason: r.error }, 'webhook refused by the SSRF guard')
      return
    }
    const { status, error } = r
    if (n > this.schedule.length) {
      this.o.log.recordAttempt(d.id, { status: 'failed', responseCode: status, error })
      this.end('failed', n)
      log.warn({ status, error }, 'webhook failed for good: retries exhausted')
      return
    }
    const base = this.schedule[n - 1]
    const wait = Math.round(base * (1 - this.jitter + Math.random() * 2 * this.jitter))
    this.o.log.recordAttempt(d.id, {
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

function safe<T>(fn: () => T): T | null {
  try {
    return fn()
  } catch {
    return null
  }
}
