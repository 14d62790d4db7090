/**
 * Draining the dead-letter queue: every message there is a job the workers
 * could not finish (it crashed a worker `maxReceiveCount` times, had no
 * handler, or its message could not be parsed). Each job is marked failed with
 * the reason `dead-lettered after N deliveries`, its terminal event published,
 * and the message acknowledged. Run periodically by the worker process
 * (workers/main.ts) and by the Lambda DLQ handler (functions/).
 */
import type { Logger } from '../core/logger.js'
import type { Metrics } from '../core/metrics.js'
import { type Events, FINAL_SEQ, type JobEvent } from '../core/ports/events.js'
import { IllegalTransitionError, isTerminal, type JobRecord, type JobStore } from '../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../core/ports/queue.js'
import { queueMessageSchema } from '../core/protocol.js'

export interface DrainDeadLetterOptions {
  deadLetter: Queue
  jobs: JobStore
  /** The source queue's redrive setting: the N in the reason. */
  maxReceiveCount: number
  events?: Events
  logger: Logger
  metrics?: Metrics
  /** Stop after this many messages (one call stays bounded). Default 100. */
  limit?: number
  /** Called with each job this drain marked failed (webhooks hook here). */
  onJobEvent?: (job: JobRecord, event: JobEvent) => void | Promise<void>
}

export interface DrainResult {
  /** Jobs marked failed by this drain. */
  failed: string[]
  /** Messages whose job was already finished. */
  alreadyFinished: number
  /** Messages that were not a job pointer, or pointed at no job: logged and dropped. */
  dropped: number
}

/** One pass over the dead-letter queue until it is empty (or `limit`). */
export async function drainDeadLetter(o: DrainDeadLetterOptions): Promise<DrainResult> {
  const out: DrainResult = { failed: [], alreadyFinished: 0, dropped: 0 }
  const limit = o.limit ?? 100
  let seen = 0
  while (seen < limit) {
    const batch = await o.deadLetter.receive({ maxMessages: Math.min(10, limit - seen), waitTimeSeconds: 0 })
    if (!batch.length) break
    for (const msg of batch) {
      seen++
      await handleDeadLetter(msg, o, out)
    }
  }
  return out
}

export type DeadLetterOutcome = 'failed' | 'already_finished' | 'dropped'

export type FailDeadLetteredOptions = Omit<DrainDeadLetterOptions, 'deadLetter' | 'limit'>

/**
 * One dead-lettered message body: mark its job failed. For callers that get
 * the messages themselves (the Lambda SQS handler, which then acks by
 * returning). Store errors throw, so the message stays for another try.
 */
export async function failDeadLetteredJob(
  rawBody: string,
  o: FailDeadLetteredOptions,
  messageId?: string,
): Promise<{ outcome: DeadLetterOutcome; jobId?: string }> {
  let body: { jobId: string; kind: string; requestId?: string }
  try {
    body = queueMessageSchema.parse(JSON.parse(rawBody))
  } catch {
    o.logger.error(
      { messageId, body: rawBody.slice(0, 500) },
      'dead-lettered message is not a job pointer; dropped',
    )
    return { outcome: 'dropped' }
  }
  const log = o.logger.child({ requestId: body.requestId, jobId: body.jobId, kind: body.kind, messageId })
  const job = await o.jobs.getById(body.jobId)
  if (!job) {
    log.error('dead-lettered message points at no job; dropped')
    return { outcome: 'dropped', jobId: body.jobId }
  }
  if (isTerminal(job.state)) {
    log.info({ state: job.state, error: job.error }, 'dead-lettered job had already finished')
    return { outcome: 'already_finished', jobId: job.id }
  }
  const error = {
    code: 'dead_lettered',
    message: `dead-lettered after ${o.maxReceiveCount} ${o.maxReceiveCount === 1 ? 'delivery' : 'deliveries'}`,
  }
  let failed: JobRecord
  try {
    failed = await o.jobs.transition(job.id, 'failed', { error })
  } catch (err) {
    if (!(err instanceof IllegalTransitionError)) throw err
    return { outcome: 'already_finished', jobId: job.id }
  }
  o.metrics?.jobs.inc({ kind: job.kind, state: 'failed' })
  log.warn({ attempts: failed.attempts }, 'job dead-lettered; marked failed')
  // The job's last run, FINAL_SEQ: after anything that run published (subscribers drop what
  // orders before), as the edge does for a job canceled before it ran.
  const event: JobEvent = {
    jobId: job.id,
    run: failed.attempts,
    seq: FINAL_SEQ,
    type: 'failed',
    data: error,
    at: Date.now(),
  }
  await o.events?.publish(event).catch((err) => log.warn({ err }, 'event publish failed'))
  await Promise.resolve(o.onJobEvent?.(failed, event)).catch((err) =>
    log.warn({ err }, 'onJobEvent hook failed'),
  )
  return { outcome: 'failed', jobId: job.id }
}

async function handleDeadLetter(
  msg: QueueMessage,
  o: DrainDeadLetterOptions,
  out: DrainResult,
): Promise<void> {
  const r = await failDeadLetteredJob(msg.body, o, msg.id)
  if (r.outcome === 'failed' && r.jobId) out.failed.push(r.jobId)
  else if (r.outcome === 'already_finished') out.alreadyFinished++
  else out.dropped++
  await o.deadLetter.ack(msg.receiptHandle)
}
