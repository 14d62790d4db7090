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
 * - a job still running `holdMarginMs` before its delivery's hold cap (SQS: 12
 *   hours from the receive) is stopped the same way, and its message sent
 *   again as a fresh one, so it resumes from its checkpoint however many
 *   holds it needs (loop/lease.ts, loop/decide.ts);
 * - transient errors return the message with an exponential backoff; on the last
 *   allowed delivery (`receiveCount >= maxReceiveCount`) the job fails with the
 *   error kept. Messages that cannot be handled at all (unparseable, no handler
 *   for the kind, a job that crashes the process) are left to the queue's
 *   redrive, which moves them to the dead-letter queue (see dead-letter.ts).
 *
 * The pieces, in the order a delivery meets them: loop/claim.ts (message →
 * claimed job, or the message dealt with), loop/lease.ts (heartbeat and cancel
 * watch while the handler runs), loop/decide.ts (the outcome → the record's
 * transition and the message's fate, a pure function), applied by `settle`
 * below with loop/effects.ts (transitions, events, ack/return).
 */
import type { Logger } from '../core/logger.js'
import type { Metrics } from '../core/metrics.js'
import type { Events, JobEvent, JobEventType } from '../core/ports/events.js'
import {
  IllegalTransitionError,
  type JobRecord,
  type JobStore,
  StaleRunError,
} from '../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../core/ports/queue.js'
import { type BackoffOptions, backoffDelay, sleep } from './backoff.js'
import { claim } from './loop/claim.js'
import { type Decision, decide, type HandlerResult } from './loop/decide.js'
import { type LoopEffects, loopEffects } from './loop/effects.js'
import { holdLease, JobAbortError, type JobAbortKind } from './loop/lease.js'

export { JobAbortError, type JobAbortKind }

export interface JobContext {
  /** The job record as it entered `running` (attempts already counts this run). */
  job: JobRecord
  /** Fires on cancellation, shutdown, a lost lease or the hold cap near; `signal.reason` is a JobAbortError. */
  signal: AbortSignal
  /** Child logger carrying requestId and jobId. */
  logger: Logger
  /** Publish an event of this job; run and seq are assigned here (run: job.attempts; seq 1, 2, 3, ...). Never throws. */
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
  /**
   * How long before the delivery's hold cap (receivedAt + queue.maxHoldSeconds)
   * a still-running job is stopped and given back, ms. Default: three
   * heartbeats (a slow or failed extend must not reach the cap) plus
   * abortWaitMs (the handler saves its checkpoint), at most a quarter of the
   * cap. Must be under half the cap, so every hold makes progress.
   */
  holdMarginMs?: number
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
  /**
   * Writes the usage record of a job that ends with an output, before its
   * terminal transition; a failed write leaves the message to be redelivered.
   */
  meter?: (job: JobRecord, output: unknown) => Promise<void>
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
  if (o.holdMarginMs !== undefined && !(o.holdMarginMs >= 0 && o.holdMarginMs < o.queue.maxHoldSeconds * 500))
    bad("holdMarginMs must be >= 0 and under half the queue's maxHoldSeconds")
  if (Object.keys(o.handlers).length === 0) bad('at least one handler is required')
}

/** Runs until `options.signal` aborts and in-flight jobs are finished or released. */
export async function runWorker(options: RunWorkerOptions): Promise<void> {
  validate(options)
  const { queue, jobs, handlers, signal, logger } = options
  const concurrency = options.concurrency ?? 4
  const visibility = options.visibilityTimeoutSeconds
  const waitTimeSeconds = options.waitTimeSeconds ?? 20
  const graceMs = options.shutdownGraceMs ?? 25_000
  const retryBackoff = options.retryBackoff ?? { base: 2, max: 900 }
  const receiveBackoff = options.receiveBackoff ?? { base: 250, max: 10_000 }
  const abortWaitMs = options.abortWaitMs ?? 2_000
  const heartbeatMs = options.heartbeatIntervalMs ?? Math.max(100, Math.floor((visibility * 1000) / 3))
  const run: RunSettings = {
    visibility,
    maxReceiveCount: options.maxReceiveCount,
    abortWaitMs,
    heartbeatMs,
    cancelPollMs: options.cancelPollMs ?? 250,
    holdMarginMs: options.holdMarginMs ?? Math.min(3 * heartbeatMs + abortWaitMs, queue.maxHoldSeconds * 250),
    retryBackoff,
  }
  const effects = loopEffects(options)
  const inFlight = new Map<string, InFlight>()

  const statsTimer = startStats(options)

  async function handleMessage(msg: QueueMessage, ctrl: AbortController): Promise<void> {
    const claimed = await claim(msg, {
      jobs,
      effects,
      handlers,
      retryBackoff,
      unhandledDelaySeconds: options.unhandledDelaySeconds ?? 5,
      logger,
    })
    if (claimed) await runJob(msg, claimed.job, claimed.handler, ctrl, claimed.log, options, effects, run)
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
          (late) => Promise.all(late.map((m) => effects.returnMessage(m, 0, logger))),
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
        await effects.returnMessage(msg, 0, logger)
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

/** The per-run settings runWorker derives from its options. */
interface RunSettings {
  visibility: number
  maxReceiveCount: number
  abortWaitMs: number
  heartbeatMs: number
  cancelPollMs: number
  holdMarginMs: number
  retryBackoff: BackoffOptions
}

/** Runs a claimed job under its lease, then applies what `decide` makes of the outcome. */
async function runJob(
  msg: QueueMessage,
  job: JobRecord,
  handler: JobHandler,
  ctrl: AbortController,
  log: Logger,
  options: RunWorkerOptions,
  effects: LoopEffects,
  run: RunSettings,
): Promise<void> {
  let seq = 0
  const publish = (type: JobEventType, data: unknown) =>
    effects.publishEvent(
      job,
      { jobId: job.id, run: job.attempts, seq: ++seq, type, data, at: Date.now() },
      log,
    )
  const lease = holdLease({
    queue: options.queue,
    jobs: options.jobs,
    msg,
    jobId: job.id,
    run: job.attempts,
    ctrl,
    visibilityTimeoutSeconds: run.visibility,
    heartbeatIntervalMs: run.heartbeatMs,
    cancelPollMs: run.cancelPollMs,
    holdMarginMs: run.holdMarginMs,
    log,
  })

  await publish('start', { attempt: job.attempts })
  log.info('job started')
  const started = Date.now()

  let result: HandlerResult
  try {
    const ctx: JobContext = {
      job,
      signal: ctrl.signal,
      logger: log,
      publish,
      heartbeat: lease.heartbeat,
      checkCancel: lease.checkCancel,
      receiveCount: msg.receiveCount,
    }
    result = await raceAbort(
      handler(ctx).then(
        (output) => ({ ok: true as const, output }),
        (err: unknown) => ({ ok: false as const, err }),
      ),
      ctrl.signal,
      run.abortWaitMs,
    )
  } finally {
    await lease.end()
  }

  const aborted = ctrl.signal.aborted ? (ctrl.signal.reason as JobAbortError).kind : undefined
  const decision = decide(
    { result, aborted },
    {
      receiveCount: msg.receiveCount,
      maxReceiveCount: run.maxReceiveCount,
      backoffSeconds: backoffDelay(msg.receiveCount, run.retryBackoff),
    },
  )
  await settle(msg, job, decision, effects, log, { seconds: (Date.now() - started) / 1000, seq: seq + 1 })
}

/** Applies a decision: the record (and its terminal event), the log line, then the message. */
async function settle(
  msg: QueueMessage,
  job: JobRecord,
  d: Decision,
  effects: LoopEffects,
  log: Logger,
  at: { seconds: number; seq: number },
): Promise<void> {
  const change = d.record
  let dropped = false
  try {
    if (change?.to === 'queued') {
      if (change.bestEffort)
        await effects.transition(job, 'queued').catch((err) => {
          if (err instanceof StaleRunError) throw err
          log.warn({ err }, 'could not put the job back to queued')
        })
      else await effects.transition(job, 'queued')
    } else if (change) {
      try {
        const done = await effects.transition(job, change.to, change.patch)
        await effects.publishTerminal(done, change.event.type, change.event.data, log, at.seq)
      } catch (err) {
        if (!(err instanceof IllegalTransitionError) || err instanceof StaleRunError) throw err
        // Finished elsewhere meanwhile (e.g. canceled while queued again): that outcome stands.
        log.warn({ err }, 'job finished elsewhere first; dropping this outcome')
        dropped = true
      }
    }
  } catch (err) {
    if (err instanceof StaleRunError) {
      // Another worker took the job over (this one's lease lapsed): the record and the message
      // are its run's now. Like a lost lease, touch neither; this run's outcome is dropped.
      log.warn(
        { err, run: err.run, currentRun: err.currentRun },
        'job taken over by another run; dropping this outcome',
      )
      return
    }
    // The job store is unreachable: leave the message un-acked; it comes back after the visibility timeout.
    log.error({ err }, 'could not record the job outcome; the message will be redelivered')
    return
  }
  if (!dropped) log[d.log.level]({ ...d.log.fields, seconds: at.seconds }, d.log.msg)
  if (d.queue.action === 'ack') await effects.ack(msg, log)
  else if (d.queue.action === 'release') await effects.returnMessage(msg, d.queue.delaySeconds, log)
  else if (d.queue.action === 'requeue') await effects.requeue(msg, log)
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
