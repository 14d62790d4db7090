/**
 * Wraps any Queue to record extend/ack/release calls and to make receives fail
 * on demand (a connection error), so the loop's unit tests run the same over
 * the in-memory queue and the real local SQLite queue.
 */
import type { Queue, QueueMessage, QueueStats, ReceiveOptions, SendOptions } from '../../core/ports/queue.js'

export class RecordingQueue implements Queue {
  readonly calls = { extend: [] as Array<[string, number]>, ack: [] as string[], release: [] as string[] }
  /** The next this-many receives throw. */
  failReceives = 0

  constructor(readonly inner: Queue) {}

  get name() {
    return this.inner.name
  }

  get maxHoldSeconds() {
    return this.inner.maxHoldSeconds
  }

  send(body: string, options?: SendOptions) {
    return this.inner.send(body, options)
  }

  async receive(options?: ReceiveOptions): Promise<QueueMessage[]> {
    if (this.failReceives > 0) {
      this.failReceives--
      throw new Error('ECONNREFUSED (simulated)')
    }
    return this.inner.receive(options)
  }

  extend(handle: string, seconds: number) {
    this.calls.extend.push([handle, seconds])
    return this.inner.extend(handle, seconds)
  }

  ack(handle: string) {
    this.calls.ack.push(handle)
    return this.inner.ack(handle)
  }

  release(handle: string) {
    this.calls.release.push(handle)
    return this.inner.release(handle)
  }

  stats(): Promise<QueueStats> {
    return this.inner.stats()
  }

  async close() {
    await this.inner.close?.()
  }
}
