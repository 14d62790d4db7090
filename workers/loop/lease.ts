/**
 * A running job's hold on its delivery: a heartbeat that keeps extending the
 * message's visibility (so no other worker receives it while this one works),
 * and a cancel watch that reads the job record and aborts the handler's
 * signal when a cancel was requested — or when the record says the job is no
 * longer ours (gone, finished elsewhere, or taken over by another run).
 */
import type { Logger } from '../../core/logger.js'
import { isTerminal, type JobStore } from '../../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../../core/ports/queue.js'

/** Why a job's signal fired. */
export type JobAbortKind = 'canceled' | 'shutdown' | 'lease_lost'

/** The reason of a job's aborted signal: the lease fires it on cancel or a lost lease, the loop on shutdown. */
export class JobAbortError extends Error {
  override readonly name = 'JobAbortError'
  constructor(readonly kind: JobAbortKind) {
    super(`job aborted: ${kind}`)
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
  let lastExtended = Date.now()
  let ended = false
  const inFlightBeats = new Set<Promise<void>>()

  const heartbeat = (): Promise<void> => {
    if (ended) return Promise.resolve()
    const beat = (async () => {
      try {
        await queue.extend(msg.receiptHandle, visibility)
        lastExtended = Date.now()
      } catch (err) {
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
      await Promise.allSettled([...inFlightBeats])
    },
  }
}
