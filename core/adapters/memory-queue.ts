/**
 * In-memory Queue: the edge's tests, and the Workers/Lambda entries when no
 * SQS queue is configured (one isolate's memory: jobs do not survive it, and
 * no worker outside the isolate can see them). Visibility timeouts and
 * long-poll are honoured; there is no dead-letter queue, so it runs no Queue
 * contract suite: durable queues are core/adapters/local-queue.ts and sqs-queue.ts.
 */
import { newId } from '../ids.js'
import type { Queue, QueueMessage, QueueStats, ReceiveOptions, SendOptions } from '../ports/queue.js'

interface Entry {
  id: string
  body: string
  sentAt: number
  visibleAt: number
  receiveCount: number
  handle?: string
}

export class MemoryQueue implements Queue {
  readonly name: string
  private readonly entries: Entry[] = []
  private readonly waiters = new Set<() => void>()

  constructor(
    name = 'memory',
    private readonly visibilityTimeoutSeconds = 30,
  ) {
    this.name = name
  }

  async send(body: string, options: SendOptions = {}): Promise<{ id: string }> {
    const now = Date.now()
    const e: Entry = {
      id: newId('msg'),
      body,
      sentAt: now,
      visibleAt: now + (options.delaySeconds ?? 0) * 1000,
      receiveCount: 0,
    }
    this.entries.push(e)
    for (const w of this.waiters) w()
    return { id: e.id }
  }

  async receive(options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const deadline = Date.now() + (options.waitTimeSeconds ?? 0) * 1000
    for (;;) {
      const got = this.take(options)
      if (got.length || Date.now() >= deadline || options.signal?.aborted) return got
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          this.waiters.delete(done)
          options.signal?.removeEventListener('abort', done)
          resolve()
        }
        const timer = setTimeout(done, Math.min(250, Math.max(1, deadline - Date.now())))
        this.waiters.add(done)
        options.signal?.addEventListener('abort', done)
      })
    }
  }

  private take(options: ReceiveOptions): QueueMessage[] {
    const now = Date.now()
    const max = options.maxMessages ?? 1
    const out: QueueMessage[] = []
    for (const e of this.entries) {
      if (out.length >= max) break
      if (e.visibleAt > now) continue
      e.receiveCount += 1
      e.handle = newId('rh')
      e.visibleAt = now + (options.visibilityTimeoutSeconds ?? this.visibilityTimeoutSeconds) * 1000
      out.push({
        id: e.id,
        receiptHandle: e.handle,
        body: e.body,
        receiveCount: e.receiveCount,
        sentAt: e.sentAt,
      })
    }
    return out
  }

  private byHandle(handle: string): Entry | undefined {
    return this.entries.find((e) => e.handle === handle)
  }

  async extend(receiptHandle: string, seconds: number): Promise<void> {
    const e = this.byHandle(receiptHandle)
    if (e) e.visibleAt = Date.now() + seconds * 1000
  }

  async ack(receiptHandle: string): Promise<void> {
    const i = this.entries.findIndex((e) => e.handle === receiptHandle)
    if (i >= 0) this.entries.splice(i, 1)
  }

  async release(receiptHandle: string): Promise<void> {
    const e = this.byHandle(receiptHandle)
    if (e) e.visibleAt = Date.now()
    for (const w of this.waiters) w()
  }

  async stats(): Promise<QueueStats> {
    const now = Date.now()
    let visible = 0
    let inFlight = 0
    let delayed = 0
    for (const e of this.entries) {
      if (e.visibleAt <= now) visible++
      else if (e.receiveCount > 0) inFlight++
      else delayed++
    }
    const oldest = this.entries[0]
    return { visible, inFlight, delayed, oldestAgeSeconds: oldest ? (now - oldest.sentAt) / 1000 : 0 }
  }
}
