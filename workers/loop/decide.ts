/**
 * What a run of a job means for its record and its delivery: a pure function
 * of the handler's outcome (what it returned or threw, and why its signal
 * fired, if it did) and of the delivery's attempt number. The worker loop
 * applies the decision (worker-loop.ts `settle`); the rules are the loop's
 * guarantees (docs/architecture.md, "Nothing accepted is lost"):
 *
 * - a result is kept unless the job was canceled: a handler that finished
 *   while being shut down or losing its lease still finished;
 * - a canceled job is terminal and its message acknowledged; it keeps what the
 *   handler produced before it stopped (StoppedEarly's output), if anything;
 * - on shutdown the job goes back to `queued` and its message is released at
 *   once, so another worker takes it without waiting for the visibility timeout;
 * - before the delivery's hold cap (SQS: 12 hours from the receive) the job
 *   goes back to `queued` too, and its message is sent again and the old one
 *   acknowledged ('requeue'): a released message would count one more receive
 *   each time, and a job that needs several holds (a 3-day fine-tune: about
 *   six) would be dead-lettered by maxReceiveCount, and failed as out of
 *   retries on its last allowed delivery; a fresh message starts at 1;
 * - after a lost lease the job belongs to whoever holds its message now:
 *   neither the record nor the message is touched;
 * - a permanent error fails the job with its reason;
 * - any other error is retried through the queue with a backoff, until the
 *   last allowed delivery, which fails the job with the reason kept.
 */
import type { JobError, TransitionPatch } from '../../core/ports/job-store.js'
import { classify, StoppedEarly, TransientError, toJobError } from '../errors.js'
import type { TerminalEventType } from './effects.js'
import type { JobAbortKind } from './lease.js'

/** How the handler settled: what it returned, or what it threw. */
export type HandlerResult = { ok: true; output: unknown } | { ok: false; err: unknown }

export interface Outcome {
  result: HandlerResult
  /** Why the job's signal fired, when it did. */
  aborted?: JobAbortKind
}

export interface Attempt {
  /** Delivery number of the message (1 on the first). */
  receiveCount: number
  /** Deliveries after which the queue dead-letters the message. */
  maxReceiveCount: number
  /** Backoff before the next delivery, seconds (backoffDelay; computed by the caller, it has jitter). */
  backoffSeconds: number
}

export type RecordChange =
  /** A terminal transition and the event that announces it. */
  | {
      to: 'succeeded' | 'failed' | 'canceled'
      patch?: TransitionPatch
      event: { type: TerminalEventType; data: unknown }
    }
  /**
   * Back to `queued` for another run. `bestEffort`: a failed write is only
   * logged and the message is still returned (at shutdown the next worker
   * takes over a job left `running`); otherwise the message is left alone and
   * comes back after its visibility timeout.
   */
  | { to: 'queued'; bestEffort: boolean }

export type QueueAction =
  | { action: 'ack' }
  /** Visible again after `delaySeconds` (0: now). */
  | { action: 'release'; delaySeconds: number }
  /** Sent again as a fresh message (receiveCount 1), then this delivery acknowledged. */
  | { action: 'requeue' }
  /** Not touched: it comes back after its visibility timeout (and dead-letters after maxReceiveCount). */
  | { action: 'leave' }

export interface Decision {
  /** The job record's transition; null leaves the record as it is. */
  record: RecordChange | null
  queue: QueueAction
  /** The line the loop logs once the decision is applied. */
  log: { level: 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }
}

export function decide(outcome: Outcome, attempt: Attempt): Decision {
  const { result, aborted } = outcome
  if (result.ok && aborted !== 'canceled') {
    const output = result.output ?? null
    return {
      record: { to: 'succeeded', patch: { output }, event: { type: 'completed', data: output } },
      queue: { action: 'ack' },
      log: { level: 'info', msg: 'job succeeded' },
    }
  }
  if (aborted === 'canceled') {
    // What the run produced before it stopped (or all of it, when it finished as the cancel came):
    // kept on the record and sent with the event, so a generation is metered by what it generated.
    const output = result.ok
      ? result.output
      : result.err instanceof StoppedEarly
        ? result.err.output
        : undefined
    return {
      record:
        output === undefined || output === null
          ? { to: 'canceled', event: { type: 'canceled', data: null } }
          : { to: 'canceled', patch: { output }, event: { type: 'canceled', data: output } },
      queue: { action: 'ack' },
      log: { level: 'info', msg: 'job canceled' },
    }
  }
  if (aborted === 'shutdown') {
    return {
      record: { to: 'queued', bestEffort: true },
      queue: { action: 'release', delaySeconds: 0 },
      log: { level: 'info', msg: 'job released for another worker (shutdown)' },
    }
  }
  if (aborted === 'hold_expiring') {
    return {
      record: { to: 'queued', bestEffort: true },
      queue: { action: 'requeue' },
      log: { level: 'info', msg: "job given back before the queue's hold cap; sent again to resume" },
    }
  }
  if (aborted === 'lease_lost') {
    return {
      record: null,
      queue: { action: 'leave' },
      log: { level: 'warn', msg: 'lease lost; leaving the job to whoever holds its message now' },
    }
  }
  const err = (result as { err: unknown }).err
  const jobError = toJobError(err)
  if (classify(err) === 'permanent') return fail(jobError, err, 'job failed (permanent error)')
  if (attempt.receiveCount >= attempt.maxReceiveCount) {
    const kept: JobError = {
      code: jobError.code,
      message: `${jobError.message} (gave up after ${attempt.receiveCount} deliveries)`,
    }
    return fail(kept, err, 'job failed: retries exhausted')
  }
  let delay = attempt.backoffSeconds
  if (err instanceof TransientError && err.retryAfterSeconds) delay = Math.max(delay, err.retryAfterSeconds)
  return {
    record: { to: 'queued', bestEffort: false },
    queue: { action: 'release', delaySeconds: delay },
    log: {
      level: 'warn',
      msg: 'job failed (transient); will retry',
      fields: { err, retryInSeconds: Math.ceil(delay) },
    },
  }
}

function fail(error: JobError, err: unknown, msg: string): Decision {
  return {
    record: { to: 'failed', patch: { error }, event: { type: 'failed', data: error } },
    queue: { action: 'ack' },
    log: { level: 'warn', msg, fields: { err } },
  }
}
