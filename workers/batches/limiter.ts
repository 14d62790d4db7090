/** A counting semaphore: at most `max` holders; waiters are served in order. */
export class Limiter {
  private held = 0
  private readonly waiting: Array<() => void> = []

  constructor(readonly max: number) {
    if (!(Number.isInteger(max) && max >= 1)) throw new Error('Limiter: max must be an integer >= 1')
  }

  get inUse(): number {
    return this.held
  }

  /** Resolves when a slot is held; rejects with the signal's reason if it aborts first. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.held < this.max) {
      this.held++
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort)
        this.held++
        resolve()
      }
      const onAbort = () => {
        const i = this.waiting.indexOf(grant)
        if (i >= 0) this.waiting.splice(i, 1)
        reject(signal?.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(grant)
    })
  }

  release(): void {
    this.held--
    this.waiting.shift()?.()
  }
}
