/**
 * The worker loop: one visible `while (!signal.aborted) { receive; handle; ack }`
 * (bullmq `src/classes/worker.ts` `mainLoop`), with per-message heartbeat,
 * cancel watch and typed error handling (sqs-consumer `src/consumer.ts`
 * `processMessage`).
 *
 * Guarantees (docs/architecture.md, "Nothing accepted is lost"):
 * - a message is acknowledged only once its job is terminal (succeeded, failed
 *   with a reason, canceled) or was already terminal;
 * - a worker that dies leaves its message un-acked: it comes back after the
 *   visibility timeout and the next worker takes over the job (running → queued
 *   → running, attempts grows);
 * - on shutdown in-flight jobs get `shutdownGraceMs`, then are aborted, put back
 *   to `queued` and their messages released so another worker takes them at once;
 * - transient errors return the message with an exponential backoff; on the last
 *   allowed delivery (`receiveCount >= maxReceiveCount`) the job fails with the
 *   error kept. Messages that cannot be handled at all (unparseable, no handler
 *   for the kind, a job that crashes the process) are left to the queue's
 *   redrive, which moves them to the dead-letter queue (see dead-letter.ts).
 */
import type { Logger } from '../core/logger.js'
import type { Metrics } from '../core/metrics.js'
import type { Events, JobEvent, JobEventType } from '../core/ports/events.js'
import {
  IllegalTransitionError,
  isTerminal,
  type JobError,
  type JobRecord,
  type JobState,
  type JobStore,
  type TransitionPatch,
} from '../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../core/ports/queue.js'
import { queueMessageSchema } from '../core/protocol.js'
import { type BackoffOptions, backoffDelay, sleep } from './backoff.js'
import { classify, TransientError, toJobError } from './errors.js'

/** Why a job's signal fired. */
export type JobAbortKind = 'canceled' | 'shutdown' | 'lease_lost'

export class JobAbortError extends Error {
  override readonly name = 'JobAbortError'
  constructor(readonly kind: JobAbortKind) {
    super(`job aborted: ${kind}`)
  }
}

export interface JobContext {
  /** The job record as it entered `running` (attempts already counts this run). */
  job: JobRecord
  /** Fires on cancellation, shutdown or a lost lease; `signal.reason` is a JobAbortError. */
  signal: AbortSignal
  /** Child logger carrying requestId and jobId. */
  logger: Logger
  /** Publish an event of this job; seq is assigned here (1, 2, 3, ... per run). Never throws. */
  publish(type: JobEventType, data: unknown): Promise<void>
  /** Extend the message's visibility now (the loop also does it every heartbeatIntervalMs). */
  heartbeat(): Promise<void>
  /** Read the job record now and abort the signal if a cancel was requested; throws the abort error then. */
  checkCancel(): Promise<void>
  /** Delivery number of the message (1 on the first). */
  receiveCount: number
}

export type JobHandler = (ctx: JobContext) => Promise<unknown>

export interface RunWorkerOptions {
  queue: Queue
  jobs: JobStore
  events: Events
  /** Handlers by job kind. A kind without a handler is returned to the queue (and dead-letters eventually). */
  handlers: Record<string, JobHandler>
  /** Aborting it starts the graceful shutdown: stop receiving, drain, release. */
  signal: AbortSignal
  /** Jobs in flight at once. Default 4. */
  concurrency?: number
  /** Visibility of each delivery, extended by the heartbeat. Seconds. */
  visibilityTimeoutSeconds: number
  /** Deliveries after which the queue dead-letters a message (must match the queue's redrive). */
  maxReceiveCount: number
  /** Long-poll wait per receive, seconds (0–20). Default 20. */
  waitTimeSeconds?: number
  /**
   * Pass the shutdown signal into `receive`, ending a long poll at once. Only
   * safe when an aborted receive cannot have taken messages (the local queue's
   * receive is one transaction); with SQS an aborted request may still lease
   * messages server-side, hidden for a visibility timeout, so by default the
   * loop lets the last poll finish (≤ waitTimeSeconds) and releases what it got.
   */
  abortableReceive?: boolean
  /** How long in-flight jobs may run after shutdown starts before they are aborted and released. Default 25 000. */
  shutdownGraceMs?: number
  /** After aborting a job, how long to wait for its handler to return before releasing anyway. Default 2 000. */
  abortWaitMs?: number
  /** Heartbeat period. Default visibility/3. */
  heartbeatIntervalMs?: number
  /** How often the job record is read for cancelRequested. Default 250. */
  cancelPollMs?: number
  /** Backoff of transient job failures, in seconds. Default base 2, max 900. */
  retryBackoff?: BackoffOptions
  /** Backoff after a failed receive (connection errors), in ms. Default base 250, max 10 000. */
  receiveBackoff?: BackoffOptions
  /** Delay before a message this worker cannot handle (unparseable, unknown kind) is visible again, seconds. Default 5. */
  unhandledDelaySeconds?: number
  /** Queue stats → metrics period. Default 5 000 ms; 0 disables. */
  statsIntervalMs?: number
  /** Dead-letter queue, only for its depth metric. */
  deadLetter?: Queue
  logger: Logger
  metrics?: Metrics
  /** Called after every event this worker publishes, with the job record as of that event (webhooks hook here). */
  onJobEvent?: (job: JobRecord, event: JobEvent) => void | Promise<void>
}

interface InFlight {
  ctrl: AbortController
  task: Promise<void>
}

function validate(o: RunWorkerOptions): void {
  const bad = (rule: string) => {
    throw new Error(`runWorker: ${rule}`)
  }
  if (o.concurrency !== undefined && (!Number.isInteger(o.concurrency) || o.concurrency < 1))
    bad('concurrency must be an integer >= 1')
  if (!(o.visibilityTimeoutSeconds > 0)) bad('visibilityTimeoutSeconds must be > 0')
  if (!Number.isInteger(o.maxReceiveCount) || o.maxReceiveCount < 1)
    bad('maxReceiveCount must be an integer >= 1')
  if (o.waitTimeSeconds !== undefined && (o.waitTimeSeconds < 0 || o.waitTimeSeconds > 20))
    bad('waitTimeSeconds must be between 0 and 20')
  if (o.heartbeatIntervalMs !== undefined && o.heartbeatIntervalMs >= o.visibilityTimeoutSeconds * 1000)
    bad('heartbeatIntervalMs must be shorter than the visibility timeout')
  if (o.shutdownGraceMs !== undefined && o.shutdownGraceMs < 0) bad('shutdownGraceMs must be >= 0')
  if (Object.keys(o.handlers).length === 0) bad('at least one handler is required')
}

/** Runs until `options.signal` aborts and in-flight jobs are finished or released. */
export async function runWorker(options: RunWorkerOptions): Promise<void> {
  validate(options)
  const { queue, jobs, events, handlers, signal, logger, metrics } = options
  const concurrency = options.concurrency ?? 4
  const visibility = options.visibilityTimeoutSeconds
  const maxReceiveCount = options.maxReceiveCount
  const waitTimeSeconds = options.waitTimeSeconds ?? 20
  const graceMs = options.shutdownGraceMs ?? 25_000
  const abortWaitMs = options.abortWaitMs ?? 2_000
  const heartbeatMs = options.heartbeatIntervalMs ?? Math.max(100, Math.floor((visibility * 1000) / 3))
  const cancelPollMs = options.cancelPollMs ?? 250
  const retryBackoff = options.retryBackoff ?? { base: 2, max: 900 }
  const receiveBackoff = options.receiveBackoff ?? { base: 250, max: 10_000 }
  const unhandledDelay = options.unhandledDelaySeconds ?? 5
  const inFlight = new Map<string, InFlight>()

  const statsTimer = startStats(options)

  /** State change with the jobs metric. */
  async function transition(job: JobRecord, to: JobState, patch?: TransitionPatch): Promise<JobRecord> {
    const next = await jobs.transition(job.id, to, patch)
    metrics?.jobs.inc({ kind: job.kind, state: to })
    return next
  }

  /** Make a delivery visible again after `seconds` (0: now). Errors only log: the timeout brings it back anyway. */
  async function returnMessage(msg: QueueMessage, seconds: number, log: Logger): Promise<void> {
    try {
      if (seconds <= 0) await queue.release(msg.receiptHandle)
      else await queue.extend(msg.receiptHandle, Math.min(43_200, Math.ceil(seconds)))
    } catch (err) {
      log.warn({ err }, 'could not return the message; it comes back when its visibility times out')
    }
  }

  async function ack(msg: QueueMessage, log: Logger): Promise<void> {
    try {
      await queue.ack(msg.receiptHandle)
    } catch (err) {
      // The job is terminal: a redelivery sees that and acks again.
      log.warn({ err }, 'ack failed; a redelivery will find the job finished')
    }
  }

  async function handleMessage(msg: QueueMessage, ctrl: AbortController): Promise<void> {
    const mlog = logger.child({ messageId: msg.id, receiveCount: msg.receiveCount })
    let body: { jobId: string; kind: string; requestId?: string }
    try {
      body = queueMessageSchema.parse(JSON.parse(msg.body))
    } catch (err) {
      mlog.error(
        { err, body: msg.body.slice(0, 200) },
        'unparseable queue message; left for the dead-letter queue after maxReceiveCount deliveries',
      )
      return returnMessage(msg, unhandledDelay, mlog)
    }
    let log = mlog.child({ requestId: body.requestId, jobId: body.jobId })
    let job: JobRecord | null
    try {
      job = await jobs.getById(body.jobId)
    } catch (err) {
      log.error({ err }, 'job store read failed; retrying later')
      return returnMessage(msg, backoffDelay(msg.receiveCount, retryBackoff), log)
    }
    if (!job) {
      log.error('queue message points at a job that does not exist; acknowledging it')
      return ack(msg, log)
    }
    log = mlog.child({ requestId: job.requestId ?? body.requestId, jobId: job.id, kind: job.kind })
    if (isTerminal(job.state)) {
      log.info({ state: job.state }, 'job already finished; acknowledging the message')
      // Canceled while queued (or finished by a worker that died before its ack): let the hook
      // see the terminal state, e.g. for the `completed` webhook, whose id is fixed per job so
      // a receiver never gets two. Not republished as an event: the edge already has it.
      await notifyTerminal(job, log)
      return ack(msg, log)
    }
    const handler = handlers[job.kind]
    if (!handler) {
      log.warn('no handler for this job kind here; message returned (dead-letters after maxReceiveCount)')
      return returnMessage(msg, unhandledDelay, log)
    }

    // Claim: queued → running. A job left `running` was lost by another worker
    // (crash or expired lease): the queue handed the delivery to us, so take it over.
    let running: JobRecord | null = null
    let current: JobRecord = job
    for (let i = 0; i < 3 && !running; i++) {
      try {
        if (current.cancelRequested) {
          const canceled = await transition(current, 'canceled')
          await publishTerminal(canceled, 'canceled', null, log, 1)
          return ack(msg, log)
        }
        if (current.state === 'running') {
          log.warn(
            { attempts: current.attempts },
            'job was left running by a worker that lost it; taking over',
          )
          current = await transition(current, 'queued')
        }
        running = await transition(current, 'running')
      } catch (err) {
        if (!(err instanceof IllegalTransitionError)) {
          log.error({ err }, 'job store write failed while claiming the job; retrying later')
          return returnMessage(msg, backoffDelay(msg.receiveCount, retryBackoff), log)
        }
        const reread = await jobs.getById(current.id).catch(() => null)
        if (!reread) return returnMessage(msg, backoffDelay(msg.receiveCount, retryBackoff), log)
        if (isTerminal(reread.state)) {
          log.info({ state: reread.state }, 'job finished elsewhere while claiming; acknowledging')
          return ack(msg, log)
        }
        current = reread
      }
    }
    if (!running) {
      log.warn('could not claim the job (contended); returning the message')
      return returnMessage(msg, backoffDelay(msg.receiveCount, retryBackoff), log)
    }
    log = log.child({ attempt: running.attempts })
    await runJob(msg, running, handler, ctrl, log)
  }

  async function publishTerminal(
    job: JobRecord,
    type: 'completed' | 'failed' | 'canceled',
    data: unknown,
    log: Logger,
    seq: number,
  ): Promise<void> {
    await publishEvent(job, { jobId: job.id, seq, type, data, at: Date.now() }, log)
  }

  async function notifyTerminal(job: JobRecord, log: Logger): Promise<void> {
    const type = job.state === 'succeeded' ? 'completed' : (job.state as 'failed' | 'canceled')
    try {
      await options.onJobEvent?.(job, {
        jobId: job.id,
        seq: 0,
        type,
        data: job.output ?? job.error ?? null,
        at: Date.now(),
      })
    } catch (err) {
      log.warn({ err, type }, 'onJobEvent hook failed')
    }
  }

  async function publishEvent(job: JobRecord, event: JobEvent, log: Logger): Promise<void> {
    try {
      await events.publish(event)
    } catch (err) {
      log.warn({ err, type: event.type, seq: event.seq }, 'event publish failed')
    }
    try {
      await options.onJobEvent?.(job, event)
    } catch (err) {
      log.warn({ err, type: event.type }, 'onJobEvent hook failed')
    }
  }

  async function runJob(
    msg: QueueMessage,
    job: JobRecord,
    handler: JobHandler,
    ctrl: AbortController,
    log: Logger,
  ): Promise<void> {
    let seq = 0
    const publish = (type: JobEventType, data: unknown) =>
      publishEvent(job, { jobId: job.id, seq: ++seq, type, data, at: Date.now() }, log)
    const abort = (kind: JobAbortKind) => {
      if (!ctrl.signal.aborted) {
        log.info({ reason: kind }, 'aborting job')
        ctrl.abort(new JobAbortError(kind))
      }
    }

    let lastExtended = Date.now()
    let heartbeatsDone = false
    // Extends still on the wire: awaited before the release/ack, which they must not overtake.
    const inFlightBeats = new Set<Promise<void>>()
    const heartbeat = (): Promise<void> => {
      if (heartbeatsDone) return Promise.resolve()
      const beat = (async () => {
        try {
          await queue.extend(msg.receiptHandle, visibility)
          lastExtended = Date.now()
        } catch (err) {
          log.warn({ err }, 'heartbeat failed')
          // Past the visibility timeout another worker may hold the message now.
          if (Date.now() - lastExtended >= visibility * 1000) abort('lease_lost')
        }
      })()
      inFlightBeats.add(beat)
      return beat.finally(() => inFlightBeats.delete(beat))
    }
    const checkCancel = async () => {
      const now = await jobs.getById(job.id)
      if (now?.cancelRequested) abort('canceled')
      else if (!now || isTerminal(now.state)) abort('lease_lost')
      if (ctrl.signal.aborted) throw ctrl.signal.reason
    }
    const hbTimer = setInterval(() => void heartbeat(), heartbeatMs)
    let polling = false
    const cancelTimer = setInterval(() => {
      if (polling || ctrl.signal.aborted) return
      polling = true
      checkCancel()
        .catch(() => {})
        .finally(() => {
          polling = false
        })
    }, cancelPollMs)

    await publish('start', { attempt: job.attempts })
    log.info('job started')
    const started = Date.now()

    let result: { ok: true; output: unknown } | { ok: false; err: unknown }
    try {
      const ctx: JobContext = {
        job,
        signal: ctrl.signal,
        logger: log,
        publish,
        heartbeat,
        checkCancel,
        receiveCount: msg.receiveCount,
      }
      result = await raceAbort(
        handler(ctx).then(
          (output) => ({ ok: true as const, output }),
          (err: unknown) => ({ ok: false as const, err }),
        ),
        ctrl.signal,
        abortWaitMs,
      )
    } finally {
      heartbeatsDone = true
      clearInterval(hbTimer)
      clearInterval(cancelTimer)
      await Promise.allSettled([...inFlightBeats])
    }

    const reason = ctrl.signal.aborted ? (ctrl.signal.reason as JobAbortError) : undefined
    const seconds = (Date.now() - started) / 1000
    try {
      if (result.ok && reason?.kind !== 'canceled') {
        try {
          const done = await transition(job, 'succeeded', { output: result.output ?? null })
          await publishTerminal(done, 'completed', result.output ?? null, log, ++seq)
          log.info({ seconds }, 'job succeeded')
        } catch (err) {
          if (!(err instanceof IllegalTransitionError)) throw err
          log.warn({ err }, 'job finished elsewhere first; dropping this result')
        }
        return ack(msg, log)
      }
      if (reason?.kind === 'canceled') {
        await finishAbnormally(job, 'canceled', undefined, log, ++seq)
        log.info({ seconds }, 'job canceled')
        return ack(msg, log)
      }
      if (reason?.kind === 'shutdown') {
        await transition(job, 'queued').catch((err) =>
          log.warn({ err }, 'could not put the job back to queued'),
        )
        await returnMessage(msg, 0, log)
        log.info({ seconds }, 'job released for another worker (shutdown)')
        return
      }
      if (reason?.kind === 'lease_lost') {
        log.warn({ seconds }, 'lease lost; leaving the job to whoever holds its message now')
        return
      }
      const err = (result as { err: unknown }).err
      const jobError = toJobError(err)
      if (classify(err) === 'permanent') {
        await finishAbnormally(job, 'failed', jobError, log, ++seq)
        log.warn({ err, seconds }, 'job failed (permanent error)')
        return ack(msg, log)
      }
      if (msg.receiveCount >= maxReceiveCount) {
        const kept: JobError = {
          code: jobError.code,
          message: `${jobError.message} (gave up after ${msg.receiveCount} deliveries)`,
        }
        await finishAbnormally(job, 'failed', kept, log, ++seq)
        log.warn({ err, seconds }, 'job failed: retries exhausted')
        return ack(msg, log)
      }
      let delay = backoffDelay(msg.receiveCount, retryBackoff)
      if (err instanceof TransientError && err.retryAfterSeconds)
        delay = Math.max(delay, err.retryAfterSeconds)
      await transition(job, 'queued')
      await returnMessage(msg, delay, log)
      log.warn({ err, seconds, retryInSeconds: Math.ceil(delay) }, 'job failed (transient); will retry')
    } catch (err) {
      // The job store is unreachable: leave the message un-acked; it comes back after the visibility timeout.
      log.error({ err }, 'could not record the job outcome; the message will be redelivered')
    }
  }

  async function finishAbnormally(
    job: JobRecord,
    to: 'failed' | 'canceled',
    error: JobError | undefined,
    log: Logger,
    seq: number,
  ): Promise<void> {
    try {
      const done = await transition(job, to, error ? { error } : undefined)
      await publishTerminal(done, to, error ?? null, log, seq)
    } catch (err) {
      if (!(err instanceof IllegalTransitionError)) throw err
      log.warn({ err }, 'job finished elsewhere first')
    }
  }

  // ---- the loop ----
  let receiveFailures = 0
  /** Resolves when shutdown starts, to stop waiting on slots or a long poll. */
  const shutdownStarted = new Promise<void>((resolve) => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', () => resolve(), { once: true })
  })
  /** A long poll still open when shutdown started: whatever it returns is released. */
  let orphanedReceive: Promise<unknown> | undefined
  logger.info({ queue: queue.name, concurrency, kinds: Object.keys(handlers) }, 'worker started')
  while (!signal.aborted) {
    while (inFlight.size >= concurrency && !signal.aborted)
      await Promise.race([shutdownStarted, ...[...inFlight.values()].map((f) => f.task)])
    if (signal.aborted) break
    let messages: QueueMessage[]
    try {
      const receiving = queue.receive({
        maxMessages: Math.min(10, concurrency - inFlight.size),
        waitTimeSeconds,
        visibilityTimeoutSeconds: visibility,
        signal: options.abortableReceive ? signal : undefined,
      })
      const got = await Promise.race([receiving, shutdownStarted.then(() => null)])
      if (got === null) {
        orphanedReceive = receiving.then(
          (late) => Promise.all(late.map((m) => returnMessage(m, 0, logger))),
          () => {},
        )
        break
      }
      messages = got
      receiveFailures = 0
    } catch (err) {
      if (signal.aborted) break
      receiveFailures++
      const wait = backoffDelay(receiveFailures, receiveBackoff)
      logger.warn(
        { err, retryInMs: Math.round(wait), failures: receiveFailures },
        'receive failed; backing off',
      )
      await sleep(wait, signal)
      continue
    }
    for (const msg of messages) {
      if (signal.aborted) {
        // Received as shutdown began: give it straight back.
        await returnMessage(msg, 0, logger)
        continue
      }
      const ctrl = new AbortController()
      const task = handleMessage(msg, ctrl)
        .catch((err) => logger.error({ err, messageId: msg.id }, 'unexpected error handling a message'))
        .finally(() => inFlight.delete(msg.receiptHandle))
      inFlight.set(msg.receiptHandle, { ctrl, task })
    }
  }

  // ---- graceful shutdown ----
  if (inFlight.size) {
    logger.info({ inFlight: inFlight.size, graceMs }, 'shutdown: waiting for in-flight jobs')
    const all = Promise.allSettled([...inFlight.values()].map((f) => f.task))
    await Promise.race([all, sleep(graceMs)])
  }
  if (inFlight.size) {
    logger.warn({ inFlight: inFlight.size }, 'shutdown: grace period over; aborting and releasing jobs')
    for (const f of inFlight.values()) f.ctrl.abort(new JobAbortError('shutdown'))
    await Promise.allSettled([...inFlight.values()].map((f) => f.task))
  }
  await orphanedReceive
  if (statsTimer) clearInterval(statsTimer)
  logger.info('worker stopped')
}

/** The handler's settled result, or — once the signal aborted and `waitMs` passed — a stand-in failure. */
function raceAbort<T>(
  p: Promise<T>,
  signal: AbortSignal,
  waitMs: number,
): Promise<T | { ok: false; err: unknown }> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const onAbort = () => {
      timer = setTimeout(() => resolve({ ok: false, err: signal.reason }), waitMs)
    }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
    p.then((v) => {
      if (timer) clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      resolve(v)
    })
  })
}

function startStats(o: RunWorkerOptions): NodeJS.Timeout | undefined {
  const { metrics } = o
  const period = o.statsIntervalMs ?? 5_000
  if (!metrics || period <= 0) return undefined
  const poll = async (q: Queue) => {
    const s = await q.stats()
    metrics.queueDepth.set({ queue: q.name, state: 'visible' }, s.visible)
    metrics.queueDepth.set({ queue: q.name, state: 'in_flight' }, s.inFlight)
    metrics.queueDepth.set({ queue: q.name, state: 'delayed' }, s.delayed)
    if (s.oldestAgeSeconds !== undefined) metrics.queueOldestAge.set({ queue: q.name }, s.oldestAgeSeconds)
  }
  const tick = () => {
    for (const q of [o.queue, o.deadLetter]) {
      if (q) poll(q).catch((err) => o.logger.debug({ err, queue: q.name }, 'queue stats failed'))
    }
  }
  tick()
  const timer = setInterval(tick, period)
  timer.unref()
  return timer
}
