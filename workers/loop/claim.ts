/**
 * From a delivery to a job this worker runs: parse the message against the
 * queue protocol (core/protocol.ts), read the job record, and claim it
 * (queued → running). Everything that is not a run ends here, each with what
 * the loop's guarantees ask of the message:
 *
 * - unparseable, or no handler for the kind here: returned after a delay, so
 *   the queue's redrive dead-letters it after maxReceiveCount deliveries;
 * - no such job: acknowledged (nothing could ever run it);
 * - already terminal (canceled while queued, or finished by a worker that died
 *   before its ack): acknowledged;
 * - cancel requested before it ran: canceled and acknowledged;
 * - the job store failing, or claims contended: returned with a backoff.
 */
import type { Logger } from '../../core/logger.js'
import { FINAL_SEQ } from '../../core/ports/events.js'
import {
  IllegalTransitionError,
  isTerminal,
  type JobRecord,
  type JobStore,
} from '../../core/ports/job-store.js'
import type { QueueMessage } from '../../core/ports/queue.js'
import { queueMessageSchema } from '../../core/protocol.js'
import { type BackoffOptions, backoffDelay } from '../backoff.js'
import type { LoopEffects } from './effects.js'

export interface ClaimOptions<H> {
  jobs: JobStore
  effects: LoopEffects
  handlers: Record<string, H>
  retryBackoff: BackoffOptions
  /** Delay before a message this worker cannot handle is visible again, seconds. */
  unhandledDelaySeconds: number
  logger: Logger
}

/** A job claimed for this run: `running`, its attempts counting this run. */
export interface Claimed<H> {
  job: JobRecord
  handler: H
  /** Carries messageId, receiveCount, requestId, jobId, kind and attempt. */
  log: Logger
}

/** Claims the job of a delivery; null when the message has been dealt with instead (see the list above). */
export async function claim<H>(msg: QueueMessage, o: ClaimOptions<H>): Promise<Claimed<H> | null> {
  const { jobs, effects } = o
  const mlog = o.logger.child({ messageId: msg.id, receiveCount: msg.receiveCount })
  const retryLater = (log: Logger) =>
    effects.returnMessage(msg, backoffDelay(msg.receiveCount, o.retryBackoff), log)

  let body: { jobId: string; kind: string; requestId?: string }
  try {
    body = queueMessageSchema.parse(JSON.parse(msg.body))
  } catch (err) {
    mlog.error(
      { err, body: msg.body.slice(0, 200) },
      'unparseable queue message; left for the dead-letter queue after maxReceiveCount deliveries',
    )
    await effects.returnMessage(msg, o.unhandledDelaySeconds, mlog)
    return null
  }
  let log = mlog.child({ requestId: body.requestId, jobId: body.jobId })
  let job: JobRecord | null
  try {
    job = await jobs.getById(body.jobId)
  } catch (err) {
    log.error({ err }, 'job store read failed; retrying later')
    await retryLater(log)
    return null
  }
  if (!job) {
    log.error('queue message points at a job that does not exist; acknowledging it')
    await effects.ack(msg, log)
    return null
  }
  log = mlog.child({ requestId: job.requestId ?? body.requestId, jobId: job.id, kind: job.kind })
  if (isTerminal(job.state)) {
    log.info({ state: job.state }, 'job already finished; acknowledging the message')
    // Canceled while queued (or finished by a worker that died before its ack): let the hook
    // see the terminal state, e.g. for the `completed` webhook, whose id is fixed per job so
    // a receiver never gets two. Not republished as an event: the edge already has it.
    await effects.notifyTerminal(job, log)
    await effects.ack(msg, log)
    return null
  }
  const handler = o.handlers[job.kind]
  if (!handler) {
    log.warn('no handler for this job kind here; message returned (dead-letters after maxReceiveCount)')
    await effects.returnMessage(msg, o.unhandledDelaySeconds, log)
    return null
  }

  // queued → running. A job left `running` was lost by another worker
  // (crash or expired lease): the queue handed the delivery to us, so take it over.
  let running: JobRecord | null = null
  let current: JobRecord = job
  for (let i = 0; i < 3 && !running; i++) {
    try {
      if (current.cancelRequested) {
        const canceled = await effects.transition(current, 'canceled')
        // FINAL_SEQ: after whatever the job's last run published before it was released.
        await effects.publishTerminal(canceled, 'canceled', null, log, FINAL_SEQ)
        await effects.ack(msg, log)
        return null
      }
      if (current.state === 'running') {
        log.warn({ attempts: current.attempts }, 'job was left running by a worker that lost it; taking over')
        current = await effects.transition(current, 'queued')
      }
      running = await effects.transition(current, 'running')
    } catch (err) {
      if (!(err instanceof IllegalTransitionError)) {
        log.error({ err }, 'job store write failed while claiming the job; retrying later')
        await retryLater(log)
        return null
      }
      // Someone else moved it (or took it over: StaleRunError): read it again and decide anew.
      const reread = await jobs.getById(current.id).catch(() => null)
      if (!reread) {
        await retryLater(log)
        return null
      }
      if (isTerminal(reread.state)) {
        log.info({ state: reread.state }, 'job finished elsewhere while claiming; acknowledging')
        await effects.ack(msg, log)
        return null
      }
      current = reread
    }
  }
  if (!running) {
    log.warn('could not claim the job (contended); returning the message')
    await retryLater(log)
    return null
  }
  return { job: running, handler, log: log.child({ attempt: running.attempts }) }
}
