/**
 * Exponential backoff with jitter ("equal jitter": half fixed, half random), as
 * the AWS architecture blog's "Exponential Backoff And Jitter" describes. Used
 * for job retries, receive errors and webhook-free retry loops.
 */

export interface BackoffOptions {
  /** Delay of the first retry before jitter. */
  base: number
  /** Cap on any delay. */
  max: number
  /** Multiplier per attempt. Default 2. */
  factor?: number
}

/** Delay before retry number `attempt` (1 = first retry), in the unit of base/max. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(o.max, o.base * (o.factor ?? 2) ** Math.max(0, attempt - 1))
  return exp / 2 + random() * (exp / 2)
}

/** Resolves after `ms`, or early (without throwing) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
