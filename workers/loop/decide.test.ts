/**
 * decide() rule by rule: every outcome a handler's run can have (returned,
 * canceled, shut down, lease lost, each kind of error, on a middle and on
 * the last delivery) against the record change and queue action it must give.
 */
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { ApiError } from '../../core/errors.js'
import { INTERNAL_JOB_ERROR, PermanentError, StoppedEarly, TransientError } from '../errors.js'
import { type Attempt, type Decision, decide, type Outcome } from './decide.js'
import { JobAbortError } from './lease.js'

const first: Attempt = { receiveCount: 1, maxReceiveCount: 3, backoffSeconds: 4.5 }
const last: Attempt = { receiveCount: 3, maxReceiveCount: 3, backoffSeconds: 4.5 }

const ok = (output: unknown): Outcome['result'] => ({ ok: true, output })
const threw = (err: unknown): Outcome['result'] => ({ ok: false, err })

const zodError = z.object({ ms: z.number() }).safeParse({ ms: 'soon' }).error
const transient = new TransientError('GPU busy', { code: 'busy' })
const transientRetryAfter = new TransientError('rate limited', { code: 'busy', retryAfterSeconds: 30 })
const permanent = new PermanentError('bad model', { code: 'bad_model' })
const plain = new Error('boom')
const partial = { text: 'so far', usage: { promptTokens: 3, completionTokens: 2 } }

type Row = [
  name: string,
  outcome: Outcome,
  attempt: Attempt,
  record: Decision['record'],
  queue: Decision['queue'],
  logMsg: string,
]

const succeeded = (output: unknown): Decision['record'] => ({
  to: 'succeeded',
  patch: { output },
  event: { type: 'completed', data: output },
})
const failed = (error: { code: string; message: string }): Decision['record'] => ({
  to: 'failed',
  patch: { error },
  event: { type: 'failed', data: error },
})
const canceled: Decision['record'] = { to: 'canceled', event: { type: 'canceled', data: null } }
const ack = { action: 'ack' } as const

const rows: Row[] = [
  [
    'returned: succeeded with its output',
    { result: ok({ text: 'hi' }) },
    first,
    succeeded({ text: 'hi' }),
    ack,
    'job succeeded',
  ],
  [
    'returned nothing: succeeded with a null output',
    { result: ok(undefined) },
    first,
    succeeded(null),
    ack,
    'job succeeded',
  ],
  [
    'returned while shutting down: still succeeded (it finished)',
    { result: ok(1), aborted: 'shutdown' },
    first,
    succeeded(1),
    ack,
    'job succeeded',
  ],
  [
    'returned after its lease was lost: still succeeded',
    { result: ok(1), aborted: 'lease_lost' },
    first,
    succeeded(1),
    ack,
    'job succeeded',
  ],
  [
    'canceled, the handler stopped on its signal',
    { result: threw(new JobAbortError('canceled')), aborted: 'canceled' },
    first,
    canceled,
    ack,
    'job canceled',
  ],
  [
    'canceled, the handler stopped early with what it had: canceled, keeping it',
    { result: threw(new StoppedEarly(partial)), aborted: 'canceled' },
    first,
    { to: 'canceled', patch: { output: partial }, event: { type: 'canceled', data: partial } },
    ack,
    'job canceled',
  ],
  [
    'canceled, the handler returned anyway: canceled wins, its output kept',
    { result: ok({ text: 'late' }), aborted: 'canceled' },
    first,
    {
      to: 'canceled',
      patch: { output: { text: 'late' } },
      event: { type: 'canceled', data: { text: 'late' } },
    },
    ack,
    'job canceled',
  ],
  [
    'canceled, the handler returned nothing: canceled without an output',
    { result: ok(undefined), aborted: 'canceled' },
    first,
    canceled,
    ack,
    'job canceled',
  ],
  [
    'canceled on the last delivery: canceled, not failed',
    { result: threw(plain), aborted: 'canceled' },
    last,
    canceled,
    ack,
    'job canceled',
  ],
  [
    'shutdown: back to queued (best effort), released at once',
    { result: threw(new JobAbortError('shutdown')), aborted: 'shutdown' },
    first,
    { to: 'queued', bestEffort: true },
    { action: 'release', delaySeconds: 0 },
    'job released for another worker (shutdown)',
  ],
  [
    'shutdown on the last delivery: still released, not failed',
    { result: threw(transient), aborted: 'shutdown' },
    last,
    { to: 'queued', bestEffort: true },
    { action: 'release', delaySeconds: 0 },
    'job released for another worker (shutdown)',
  ],
  [
    'shutdown, the handler stopped early with what it had: dropped, released',
    { result: threw(new StoppedEarly(partial)), aborted: 'shutdown' },
    first,
    { to: 'queued', bestEffort: true },
    { action: 'release', delaySeconds: 0 },
    'job released for another worker (shutdown)',
  ],
  [
    'hold cap near: back to queued (best effort), sent again as a fresh message',
    { result: threw(new JobAbortError('hold_expiring')), aborted: 'hold_expiring' },
    first,
    { to: 'queued', bestEffort: true },
    { action: 'requeue' },
    "job given back before the queue's hold cap; sent again to resume",
  ],
  [
    'hold cap near on the last delivery: sent again, not failed as out of retries',
    { result: threw(transient), aborted: 'hold_expiring' },
    last,
    { to: 'queued', bestEffort: true },
    { action: 'requeue' },
    "job given back before the queue's hold cap; sent again to resume",
  ],
  [
    'hold cap near, but the handler had finished: succeeded',
    { result: ok({ text: 'done' }), aborted: 'hold_expiring' },
    first,
    succeeded({ text: 'done' }),
    ack,
    'job succeeded',
  ],
  [
    'lease lost, the handler stopped early with what it had: left alone',
    { result: threw(new StoppedEarly(partial)), aborted: 'lease_lost' },
    first,
    null,
    { action: 'leave' },
    'lease lost; leaving the job to whoever holds its message now',
  ],
  [
    'lease lost: record and message left to whoever holds it now',
    { result: threw(new JobAbortError('lease_lost')), aborted: 'lease_lost' },
    first,
    null,
    { action: 'leave' },
    'lease lost; leaving the job to whoever holds its message now',
  ],
  [
    'PermanentError: failed at once with its reason',
    { result: threw(permanent) },
    first,
    failed({ code: 'bad_model', message: 'bad model' }),
    ack,
    'job failed (permanent error)',
  ],
  [
    'zod validation error: permanent',
    { result: threw(zodError) },
    first,
    failed({
      code: 'invalid_input',
      message: 'invalid job input at ms: Invalid input: expected number, received string',
    }),
    ack,
    'job failed (permanent error)',
  ],
  [
    'ApiError 4xx: permanent',
    { result: threw(new ApiError(404, 'no such model', { code: 'model_not_found' })) },
    first,
    failed({ code: 'model_not_found', message: 'no such model' }),
    ack,
    'job failed (permanent error)',
  ],
  [
    'TransientError: back to queued, returned after the backoff',
    { result: threw(transient) },
    first,
    { to: 'queued', bestEffort: false },
    { action: 'release', delaySeconds: 4.5 },
    'job failed (transient); will retry',
  ],
  [
    'TransientError with a longer retryAfterSeconds: that wait',
    { result: threw(transientRetryAfter) },
    first,
    { to: 'queued', bestEffort: false },
    { action: 'release', delaySeconds: 30 },
    'job failed (transient); will retry',
  ],
  [
    'TransientError with a shorter retryAfterSeconds: the backoff',
    { result: threw(transientRetryAfter) },
    { ...first, backoffSeconds: 60 },
    { to: 'queued', bestEffort: false },
    { action: 'release', delaySeconds: 60 },
    'job failed (transient); will retry',
  ],
  [
    'untyped error: transient',
    { result: threw(plain) },
    first,
    { to: 'queued', bestEffort: false },
    { action: 'release', delaySeconds: 4.5 },
    'job failed (transient); will retry',
  ],
  [
    'ApiError 5xx: transient',
    { result: threw(new ApiError(503, 'store down')) },
    { ...first, receiveCount: 2 },
    { to: 'queued', bestEffort: false },
    { action: 'release', delaySeconds: 4.5 },
    'job failed (transient); will retry',
  ],
  [
    'TransientError on the last delivery: failed, its reason kept',
    { result: threw(transient) },
    last,
    failed({ code: 'busy', message: 'GPU busy (gave up after 3 deliveries)' }),
    ack,
    'job failed: retries exhausted',
  ],
  [
    'untyped error past the last delivery: failed',
    { result: threw(plain) },
    { ...last, receiveCount: 4 },
    failed({ code: 'internal_error', message: `${INTERNAL_JOB_ERROR} (gave up after 4 deliveries)` }),
    ack,
    'job failed: retries exhausted',
  ],
  [
    'PermanentError on the last delivery: its own reason, no "gave up"',
    { result: threw(permanent) },
    last,
    failed({ code: 'bad_model', message: 'bad model' }),
    ack,
    'job failed (permanent error)',
  ],
]

describe('decide', () => {
  it.each(rows)('%s', (_name, outcome, attempt, record, queue, logMsg) => {
    const d = decide(outcome, attempt)
    expect(d.record).toEqual(record)
    expect(d.queue).toEqual(queue)
    expect(d.log.msg).toBe(logMsg)
  })

  it('logs errors with the error and retries with the wait in whole seconds', () => {
    const retry = decide({ result: threw(transient) }, first)
    expect(retry.log).toEqual({
      level: 'warn',
      msg: 'job failed (transient); will retry',
      fields: { err: transient, retryInSeconds: 5 },
    })
    expect(decide({ result: threw(permanent) }, first).log.fields).toEqual({ err: permanent })
    expect(decide({ result: ok(1) }, first).log.level).toBe('info')
  })

  it('is pure: the same outcome and attempt give the same decision', () => {
    for (const [, outcome, attempt] of rows)
      expect(decide(outcome, attempt)).toEqual(decide(outcome, attempt))
  })
})
