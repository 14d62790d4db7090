/**
 * The worker loop's writes, shared by the claim, the run and the decision:
 * job transitions (counted in the jobs metric), events (each also handed to
 * the `onJobEvent` hook), and what happens to a delivery (ack, or return it
 * to the queue after a delay). Each tolerates failure the way the loop's
 * guarantees need; see the comments.
 */
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { Events, JobEvent } from '../../core/ports/events.js'
import type { JobRecord, JobState, JobStore, TransitionPatch } from '../../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../../core/ports/queue.js'

export type TerminalEventType = 'completed' | 'failed' | 'canceled'

export interface LoopEffects {
  /**
   * State change with the jobs metric, fenced by `job`'s attempts (the run it
   * belongs to): throws StaleRunError when another worker took the job over
   * since `job` was read. Throws what the store throws.
   */
  transition(job: JobRecord, to: JobState, patch?: TransitionPatch): Promise<JobRecord>
  /** Make a delivery visible again after `seconds` (0: now). Never throws. */
  returnMessage(msg: QueueMessage, seconds: number, log: Logger): Promise<void>
  /** Delete a delivery whose job is terminal. Never throws. */
  ack(msg: QueueMessage, log: Logger): Promise<void>
  /** Send the message again as a fresh one (receiveCount 1), then delete this delivery. Never throws. */
  requeue(msg: QueueMessage, log: Logger): Promise<void>
  /** Publish an event and tell the hook, with the job record as of that event. Never throws. */
  publishEvent(job: JobRecord, event: JobEvent, log: Logger): Promise<void>
  publishTerminal(
    job: JobRecord,
    type: TerminalEventType,
    data: unknown,
    log: Logger,
    seq: number,
  ): Promise<void>
  /** Tell only the hook (not the events) that a job this worker did not finish is terminal. Never throws. */
  notifyTerminal(job: JobRecord, log: Logger): Promise<void>
}

export interface LoopEffectsOptions {
  queue: Queue
  jobs: JobStore
  events: Events
  metrics?: Metrics
  onJobEvent?: (job: JobRecord, event: JobEvent) => void | Promise<void>
  /** Records what a job ending with an output used, before it is terminal (workers/generation/usage.ts). */
  meter?: (job: JobRecord, output: unknown) => Promise<void>
}

export function loopEffects(o: LoopEffectsOptions): LoopEffects {
  const { queue, jobs, events, metrics } = o

  async function publishEvent(job: JobRecord, event: JobEvent, log: Logger): Promise<void> {
    try {
      await events.publish(event)
    } catch (err) {
      log.warn({ err, type: event.type, seq: event.seq }, 'event publish failed')
    }
    try {
      await o.onJobEvent?.(job, event)
    } catch (err) {
      log.warn({ err, type: event.type }, 'onJobEvent hook failed')
    }
  }

  return {
    async transition(job, to, patch) {
      // Metered first: a crash before the transition reruns the job into the same usage record id.
      if (patch?.output != null) await o.meter?.(job, patch.output)
      const next = await jobs.transition(job.id, to, { ...patch, run: job.attempts })
      metrics?.jobs.inc({ kind: job.kind, state: to })
      return next
    },

    async returnMessage(msg, seconds, log) {
      try {
        if (seconds <= 0) await queue.release(msg.receiptHandle)
        // 43 200 s (12 h) is SQS's longest visibility timeout.
        else await queue.extend(msg.receiptHandle, Math.min(43_200, Math.ceil(seconds)))
      } catch (err) {
        // The visibility timeout brings it back anyway.
        log.warn({ err }, 'could not return the message; it comes back when its visibility times out')
      }
    },

    async ack(msg, log) {
      try {
        await queue.ack(msg.receiptHandle)
      } catch (err) {
        // The job is terminal: a redelivery sees that and acks again.
        log.warn({ err }, 'ack failed; a redelivery will find the job finished')
      }
    },

    async requeue(msg, log) {
      // Sent first, acked after: a failure between the two leaves a second
      // delivery of the job (at-least-once, as ever), never a job without one.
      try {
        await queue.send(msg.body)
      } catch (err) {
        // Released instead: one more receive towards maxReceiveCount, nothing lost.
        log.warn({ err }, 'could not send the job again; releasing its message instead')
        await queue.release(msg.receiptHandle).catch(() => {})
        return
      }
      try {
        await queue.ack(msg.receiptHandle)
      } catch (err) {
        log.warn({ err }, 'ack of the old delivery failed; it comes back when its visibility times out')
      }
    },

    publishEvent,

    publishTerminal(job, type, data, log, seq) {
      return publishEvent(job, { jobId: job.id, run: job.attempts, seq, type, data, at: Date.now() }, log)
    },

    async notifyTerminal(job, log) {
      const type = job.state === 'succeeded' ? 'completed' : (job.state as 'failed' | 'canceled')
      try {
        await o.onJobEvent?.(job, {
          jobId: job.id,
          run: job.attempts,
          seq: 0,
          type,
          data: job.output ?? job.error ?? null,
          at: Date.now(),
        })
      } catch (err) {
        log.warn({ err, type }, 'onJobEvent hook failed')
      }
    },
  }
}
