/**
 * Typed errors a job handler throws to tell the worker loop what to do next
 * (sqs-consumer `src/errors.ts` in spirit):
 *
 * - `TransientError`: worth another try (a dependency is down, a model is still
 *   loading). The job goes back to `queued` and its message comes back after an
 *   exponential backoff with jitter; on the last allowed delivery the job fails
 *   with this error's message kept.
 * - `PermanentError`: retrying cannot help (bad input, unknown model). The job
 *   fails at once with the reason and the message is acknowledged.
 * - `StoppedEarly`: the handler stopped on its abort signal; carries its
 *   partial output, which a canceled job keeps.
 *
 * A zod validation error counts as permanent, and so does an ApiError with a
 * 4xx status (the generation engine's invalid parameter, unknown model, context
 * too long); any other error is transient.
 */
import { ZodError } from 'zod'
import { ApiError } from '../core/errors.js'

export class WorkerError extends Error {
  /** Machine-readable reason, stored in the job record's `error.code`. */
  readonly code: string
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

export class TransientError extends WorkerError {
  override readonly name = 'TransientError'
  /** Wait at least this long before the next try (overrides the computed backoff when longer). */
  readonly retryAfterSeconds?: number
  constructor(message: string, options: { code?: string; retryAfterSeconds?: number; cause?: unknown } = {}) {
    super(message, options.code ?? 'transient_error', { cause: options.cause })
    this.retryAfterSeconds = options.retryAfterSeconds
  }
}

export class PermanentError extends WorkerError {
  override readonly name = 'PermanentError'
  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(message, options.code ?? 'job_failed', { cause: options.cause })
  }
}

/**
 * Thrown by a handler that stopped early on its abort signal, with what it
 * had produced by then. A canceled job keeps `output` (a generation whose
 * client left is metered by the tokens it generated, not max_tokens); after a
 * shutdown or a lost lease the run is retried elsewhere and `output` dropped.
 */
export class StoppedEarly extends Error {
  override readonly name = 'StoppedEarly'
  constructor(
    readonly output: unknown,
    options: { cause?: unknown } = {},
  ) {
    super('stopped early on the abort signal', options)
  }
}

export type ErrorClass = 'transient' | 'permanent'

/** How the loop treats an error thrown by a handler. */
export function classify(err: unknown): ErrorClass {
  if (err instanceof PermanentError) return 'permanent'
  if (err instanceof ZodError) return 'permanent'
  if (err instanceof ApiError && err.status < 500) return 'permanent'
  return 'transient'
}

/**
 * What a failed job says to its tenant when the error is not one of ours: a
 * runtime's message can carry file paths and internals, so it goes to the
 * worker's log (with the job id) and the record says only this.
 */
export const INTERNAL_JOB_ERROR =
  'The job failed with an internal error; the worker logs have the details (search for the job id).'

/** The `{message, code}` stored on a failed job (and shown to its tenant). */
export function toJobError(err: unknown): { message: string; code: string } {
  if (err instanceof WorkerError) return { message: err.message, code: err.code }
  if (err instanceof ApiError) return { message: err.message, code: err.code ?? err.type }
  if (err instanceof ZodError) {
    const first = err.issues[0]
    const where = first?.path.length ? ` at ${first.path.join('.')}` : ''
    return { message: `invalid job input${where}: ${first?.message ?? err.message}`, code: 'invalid_input' }
  }
  return { message: INTERNAL_JOB_ERROR, code: 'internal_error' }
}
