/**
 * The edge side of a generation: check the request against the model, create
 * the `generation` job, enqueue its pointer, and follow its events. The edge
 * never runs the model (core/protocol.ts is the contract with the workers).
 */
import { ApiError, notFound } from '../../core/errors.js'
import { FINAL_SEQ, type JobEvent } from '../../core/ports/events.js'
import { isTerminal, type JobRecord, type WebhookTarget } from '../../core/ports/job-store.js'
import {
  canceledGenerationSchema,
  type GenerationInput,
  type GenerationOutput,
  generationOutputSchema,
  type QueueMessageBody,
  type Sampling,
  type Usage,
} from '../../core/protocol.js'
import type { AppContext, EdgeDeps } from '../deps.js'

/** Same input, same output: greedy decoding or a fixed seed. */
export const isRepeatable = (s: Sampling) => s.temperature === 0 || s.seed !== undefined

export interface Submitted {
  job: JobRecord
  /** The job's events, subscribed before the job was enqueued. */
  events: AsyncIterator<JobEvent>
  /** Ends the subscription (e.g. on timeout). */
  abort: () => void
  /**
   * Reads the job record: its terminal state as an event, or null while it
   * runs. `awaitTerminal` polls it beside the events, because an events hub
   * may be local to one edge instance (on Lambda each container has its own):
   * the record in the shared JobStore is the source of truth.
   */
  poll?: () => Promise<JobEvent | null>
}

/** A terminal job record as the event a subscriber would have received. */
export function terminalEventOf(job: JobRecord | null): JobEvent | null {
  if (!job || !isTerminal(job.state)) return null
  const at = job.finishedAt ?? job.updatedAt
  const e = { jobId: job.id, run: job.attempts, seq: 0, at }
  if (job.state === 'succeeded') return { ...e, type: 'completed', data: job.output }
  // A job canceled while it ran keeps what it generated (its `canceled` event's data).
  if (job.state === 'canceled') return { ...e, type: 'canceled', data: job.output ?? null }
  return { ...e, type: 'failed', data: job.error ?? null }
}

export interface SubmitOptions {
  webhook?: WebhookTarget
  metadata?: Record<string, string>
  /** Subscribe to the job's events (default true). */
  subscribe?: boolean
}

export async function submitGeneration(
  c: AppContext,
  deps: EdgeDeps,
  input: GenerationInput,
  o: SubmitOptions = {},
): Promise<Submitted> {
  const key = c.get('key')
  const requestId = c.get('requestId')
  const job = await deps.jobs.create({
    tenant: key.tenant,
    kind: 'generation',
    input,
    model: input.model,
    requestId,
    apiKeyId: key.id,
    ...(o.webhook ? { webhook: o.webhook } : {}),
    ...(o.metadata ? { metadata: o.metadata } : {}),
  })
  const controller = new AbortController()
  let events: AsyncIterator<JobEvent> = { next: async () => ({ done: true, value: undefined }) }
  if (o.subscribe !== false) {
    events = deps.events.subscribe(job.id, { signal: controller.signal })[Symbol.asyncIterator]()
  }
  const message: QueueMessageBody = { jobId: job.id, kind: job.kind, requestId }
  try {
    await deps.queue.send(JSON.stringify(message))
  } catch (err) {
    controller.abort()
    await deps.jobs
      .transition(job.id, 'failed', { error: { message: 'could not enqueue', code: 'queue_unavailable' } })
      .catch(() => {})
    throw new ApiError(503, 'The job queue is unavailable. Please retry.', {
      code: 'queue_unavailable',
      cause: err,
    })
  }
  c.get('log').debug({ jobId: job.id }, 'job enqueued')
  return {
    job,
    events,
    abort: () => controller.abort(),
    poll: async () => terminalEventOf(await deps.jobs.getById(job.id)),
  }
}

/**
 * Requests a job's cancellation, as POST /v1/jobs/{id}/cancel does: a queued
 * job is canceled at once, and since no worker will run it to say so, the edge
 * publishes its `canceled` event; a running one stops when its worker's cancel
 * watch next reads the record. A finished job is left as it is. Returns the
 * record (null: no such job for this tenant).
 */
export async function cancelJob(deps: EdgeDeps, tenant: string, id: string): Promise<JobRecord | null> {
  const before = await deps.jobs.get(tenant, id)
  if (!before || isTerminal(before.state)) return before
  const r = await deps.jobs.requestCancel(tenant, id)
  if (r && before.state === 'queued' && r.state === 'canceled') {
    await deps.events.publish({
      jobId: id,
      // The job's last run (0: none), after anything it published before it was released.
      run: r.attempts,
      seq: FINAL_SEQ,
      type: 'canceled',
      data: { reason: 'canceled' },
      at: Date.now(),
    })
  }
  return r
}

/**
 * The usage of what a job canceled while it ran had generated (its `canceled`
 * event carries it, core/protocol.ts canceledGenerationSchema); undefined for
 * any other event, and for a job canceled before it generated anything.
 */
export function canceledUsage(e: JobEvent): Usage | undefined {
  if (e.type !== 'canceled') return undefined
  const parsed = canceledGenerationSchema.safeParse(e.data)
  return parsed.success ? parsed.data.usage : undefined
}

/** How often a synchronous waiter also reads the job record. */
const RECORD_POLL_MS = 500

/**
 * Waits for the terminal event, from the events hub or (polled) the job
 * record, whichever comes first; throws 504 after `timeoutMs`.
 */
export async function awaitTerminal(
  s: Submitted,
  timeoutMs: number,
  pollEveryMs = RECORD_POLL_MS,
): Promise<JobEvent> {
  let timer: ReturnType<typeof setTimeout> | undefined
  let polling: ReturnType<typeof setInterval> | undefined
  try {
    const timedOut = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs)
    })
    const fromEvents = (async () => {
      for (;;) {
        const { value, done } = await s.events.next()
        // Events that end early leave the answer to the record (or the timeout).
        if (done) return s.poll ? new Promise<never>(() => {}) : null
        if (value.type === 'completed' || value.type === 'failed' || value.type === 'canceled') return value
      }
    })()
    const fromRecord = new Promise<JobEvent>((resolve) => {
      if (!s.poll) return
      const poll = s.poll
      let busy = false
      polling = setInterval(() => {
        if (busy) return
        busy = true
        poll()
          .then((e) => e && resolve(e))
          .catch(() => {}) // a failed read is retried on the next tick; the events may still answer
          .finally(() => {
            busy = false
          })
      }, pollEveryMs)
    })
    const first = await Promise.race([fromEvents, fromRecord, timedOut])
    if (first) return first
  } finally {
    clearTimeout(timer)
    clearInterval(polling)
    s.abort()
  }
  throw new ApiError(504, `The job ${s.job.id} did not finish within ${Math.round(timeoutMs / 1000)} s.`, {
    code: 'timeout',
  })
}

/** The output of a completed event, or the ApiError a failed/canceled one stands for. */
export function outputOf(e: JobEvent, jobId: string): GenerationOutput {
  if (e.type === 'completed') {
    const parsed = generationOutputSchema.safeParse(e.data)
    if (parsed.success) return parsed.data
    throw new ApiError(500, 'The worker returned a malformed result.', {
      code: 'bad_worker_output',
      cause: parsed.error,
    })
  }
  if (e.type === 'canceled')
    throw new ApiError(409, `The job ${jobId} was canceled.`, { code: 'job_canceled' })
  const data = (e.data ?? {}) as { message?: string; code?: string }
  throw new ApiError(500, data.message ?? 'The generation failed.', {
    code: data.code ?? 'generation_failed',
  })
}

/**
 * Writes the usage record of a cache hit (no job ran; the worker that runs a
 * job writes that job's record, workers/generation/usage.ts). The response
 * does not wait for the commit (the SQLite store commits the records of a few
 * event-loop turns together): holding every response until then kept each
 * request's objects alive across the turn, which made the young-generation
 * collections copy them and cost ~2% of a cache hit (bench/observability.ts).
 * Workers keep the write alive (keepAlive); Lambda commits first
 * (`usageBeforeResponse`). A failed write is logged; it never fails the request.
 */
export async function recordUsage(
  c: AppContext,
  deps: EdgeDeps,
  u: { model: string; kind: string; promptTokens: number; completionTokens: number; cached: boolean },
): Promise<void> {
  const key = c.get('key')
  const at = Date.now()
  // No record id: a request writes its record once (ids are for writers that retry).
  const written = deps.usage.record({
    tenant: key.tenant,
    apiKeyId: key.id,
    model: u.model,
    kind: u.kind,
    promptTokens: u.promptTokens,
    completionTokens: u.completionTokens,
    trainedTokens: 0,
    requestId: c.get('requestId'),
    cached: u.cached,
    at,
  })
  if (deps.usageBeforeResponse) return logFailure(written, c.get('log'))
  // A store that commits records together answers them with one promise: one
  // handler per commit (one log line if it fails), not one kept per record.
  if (written === lastWrite) return
  lastWrite = written
  keepAlive(c, deps, logFailure(written, c.get('log')))
}

export { usageKind } from '../../core/protocol.js'

/**
 * Refunds the token budget a job did not use, once its usage is known. The
 * edge records no usage for a job: its worker does, whether or not an edge
 * still follows the job (workers/generation/usage.ts).
 */
export const refundUnused =
  (refund: (used: number) => Promise<void>) =>
  (u: Usage): Promise<void> =>
    refund(u.promptTokens + u.completionTokens).catch(() => {})

/** Given the logger, not `c`: the handler must not keep the request's context alive. */
const logFailure = (written: Promise<void>, log: AppContext['var']['log']) =>
  written.catch((err: unknown) => log.error({ err }, 'usage record failed'))

let lastWrite: Promise<void> | undefined

/**
 * Workers end a request's work with its response unless told to wait
 * (`deps.waitUntil`, set by edge/worker.ts). Node and Lambda set none: their
 * process outlives the response. Not by trying `c.executionCtx`, which throws
 * where there is none: an Error with its stack trace per call cost a cache
 * hit ~4% of its instructions (bench/observability.ts).
 */
export function keepAlive(c: AppContext, deps: EdgeDeps, p: Promise<unknown>): void {
  deps.waitUntil?.(c, p)
}

export { notFound }
