/**
 * A running job's hold on its delivery: a heartbeat that keeps extending the
 * message's visibility (so no other worker receives it while this one works),
 * and a cancel watch that reads the job record and aborts the handler's
 * signal when a cancel was requested — or when the record says the job is no
 * longer ours (gone, finished elsewhere, or taken over by another run).
 *
 * A delivery can be held only so long from its receive (`queue.maxHoldSeconds`:
 * SQS refuses to extend beyond 12 hours). A job that would outlive it is
 * stopped `holdMarginMs` before it ('hold_expiring'): the loop gives the job
 * back as at a shutdown, and it resumes from its checkpoint on the next run
 * (workers/loop/decide.ts). Without this, the refused extends lose the
 * message, another worker takes the job over, and a job longer than the cap
 * never finishes.
 */
import type { Logger } from '../../core/logger.js'
import { isTerminal, type JobStore } from '../../core/ports/job-store.js'
import { HoldLimitError, type Queue, type QueueMessage } from '../../core/ports/queue.js'

/** Why a job's signal fired. */
export type JobAbortKind = 'canceled' | 'shutdown' | 'lease_lost' | 'hold_expiring'

/** The reason of a job's aborted signal: the lease fires it on cancel, a lost lease or the hold cap, the loop on shutdown. */
export class JobAbortError extends Error {
  override readonly name = 'JobAbortError'
  constructor(readonly kind: JobAbortKind) {
    super(`job aborted: ${kind}`)
  }

  /** The job is given back to run again (shutdown, hold cap): a handler saves what it can resume from. */
  get resumes(): boolean {
    return this.kind === 'shutdown' || this.kind === 'hold_expiring'
  }
}

/** Abort a job's controller once, with a JobAbortError of `kind` (a later kind does not replace the first). */
export function abortJob(ctrl: AbortController, kind: JobAbortKind, log: Logger): void {
  if (ctrl.signal.aborted) return
  log.info({ reason: kind }, 'aborting job')
  ctrl.abort(new JobAbortError(kind))
}

export interface LeaseOptions {
  queue: Queue
  jobs: JobStore
  msg: QueueMessage
  jobId: string
  /** This run's number (the record's attempts when it entered `running`). */
  run: number
  /** The job's controller; its signal is the handler's. */
  ctrl: AbortController
  visibilityTimeoutSeconds: number
  heartbeatIntervalMs: number
  cancelPollMs: number
  /** The job is stopped this long before the delivery's hold cap (receivedAt + queue.maxHoldSeconds). */
  holdMarginMs: number
  log: Logger
}

export interface Lease {
  /** Extend the message's visibility now. Never throws. */
  heartbeat(): Promise<void>
  /** Read the job record now and abort the signal if a cancel was requested; throws the abort error then. */
  checkCancel(): Promise<void>
  /** Stop the timers and wait for extends still on the wire: the release or ack that follows must not be overtaken. */
  end(): Promise<void>
}

/** Starts the heartbeat and the cancel watch; `end()` stops both. */
export function holdLease(o: LeaseOptions): Lease {
  const { queue, jobs, msg, ctrl, log } = o
  const visibility = o.visibilityTimeoutSeconds
  const holdEnd = msg.receivedAt + queue.maxHoldSeconds * 1000
  let lastExtended = Date.now()
  let ended = false
  const inFlightBeats = new Set<Promise<void>>()

  const heartbeat = (): Promise<void> => {
    if (ended) return Promise.resolve()
    const beat = (async () => {
      try {
        // Never ask for more than the cap leaves (the queue would refuse it); nothing once it is reached.
        const seconds = Math.min(visibility, Math.floor((holdEnd - Date.now()) / 1000))
        if (seconds <= 0) return
        await queue.extend(msg.receiptHandle, seconds)
        lastExtended = Date.now()
      } catch (err) {
        if (err instanceof HoldLimitError) {
          // Refused, not lost: the message stays ours until the last extension runs out.
          log.warn({ err }, 'heartbeat refused at the hold cap')
          abortJob(ctrl, 'hold_expiring', log)
          return
        }
        log.warn({ err }, 'heartbeat failed')
        // Past the visibility timeout another worker may hold the message now.
        if (Date.now() - lastExtended >= visibility * 1000) abortJob(ctrl, 'lease_lost', log)
      }
    })()
    inFlightBeats.add(beat)
    return beat.finally(() => inFlightBeats.delete(beat))
  }

  const checkCancel = async (): Promise<void> => {
    const now = await jobs.getById(o.jobId)
    if (now?.cancelRequested) abortJob(ctrl, 'canceled', log)
    else if (!now || isTerminal(now.state) || now.attempts !== o.run) abortJob(ctrl, 'lease_lost', log)
    if (ctrl.signal.aborted) throw ctrl.signal.reason
  }

  const heartbeatTimer = setInterval(() => void heartbeat(), o.heartbeatIntervalMs)
  const holdTimer = setTimeout(
    () => abortJob(ctrl, 'hold_expiring', log),
    Math.max(0, holdEnd - o.holdMarginMs - Date.now()),
  )
  // One read at a time: a slow store must not pile up reads.
  let polling = false
  const cancelTimer = setInterval(() => {
    if (polling || ctrl.signal.aborted) return
    polling = true
    checkCancel()
      .catch(() => {})
      .finally(() => {
        polling = false
      })
  }, o.cancelPollMs)

  return {
    heartbeat,
    checkCancel,
    async end() {
      ended = true
      clearInterval(heartbeatTimer)
      clearInterval(cancelTimer)
      clearTimeout(holdTimer)
      await Promise.allSettled([...inFlightBeats])
    },
  }
}
