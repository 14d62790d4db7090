/**
 * The one error type the storage adapters throw for backend failures: it names
 * the adapter and keeps the original error as `cause` (unstorage
 * `src/drivers/utils/index.ts` `createError`). Contract violations of a port
 * (IllegalTransitionError, PreconditionFailedError) keep their own types.
 */

export class AdapterError extends Error {
  override readonly name = 'AdapterError'
  constructor(
    readonly adapter: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`[${adapter}] ${message}`, options)
  }
}

export function createError(adapter: string, message: string, options?: { cause?: unknown }): AdapterError {
  return new AdapterError(adapter, message, options)
}
