/**
 * A minimal in-memory Queue with visibility timeouts, receive counts and a
 * dead-letter queue, for the worker loop's unit tests only. End-to-end tests
 * run over the real local SQLite queue (`core/adapters/local-queue.ts`).
 */
import type {
  Queue,
  QueueMessage,
  QueueStats,
  QueueWithDeadLetter,
  ReceiveOptions,
} from '../../core/ports/queue.js'

interface Stored {
  id: string
  body: string
  sentAt: number
  receiveCount: number
  visibleAt: number
  receipt?: string
  delayed: boolean
}

export class MemoryQueue implements Queue {
  readonly messages = new Map<string, Stored>()
  private seq = 0
  private waiters = new Set<() => void>()

  constructor(
    readonly name: string,
    private readonly visibilityTimeoutSeconds = 30,
    private readonly redrive?: { deadLetter: MemoryQueue; maxReceiveCount: number },
  ) {}

  async send(body: string, options: { delaySeconds?: number } = {}): Promise<{ id: string }> {
    const id = `m${++this.seq}`
    const delay = (options.delaySeconds ?? 0) * 1000
    this.messages.set(id, {
      id,
      body,
      sentAt: Date.now(),
      receiveCount: 0,
      visibleAt: Date.now() + delay,
      delayed: delay > 0,
    })
    this.wake()
    if (delay > 0) setTimeout(() => this.wake(), delay + 1).unref?.()
    return { id }
  }

  private wake() {
    for (const w of this.waiters) w()
  }

  private take(max: number, visibility: number): QueueMessage[] {
    const now = Date.now()
    const out: QueueMessage[] = []
    for (const m of this.messages.values()) {
      if (out.length >= max) break
      if (m.visibleAt > now) continue
      if (this.redrive && m.receiveCount >= this.redrive.maxReceiveCount) {
        this.messages.delete(m.id)
        void this.redrive.deadLetter.send(m.body)
        continue
      }
      m.receiveCount++
      m.delayed = false
      m.receipt = `${m.id}:${m.receiveCount}:${Math.random().toString(36).slice(2)}`
      m.visibleAt = now + visibility * 1000
      out.push({
        id: m.id,
        receiptHandle: m.receipt,
        body: m.body,
        receiveCount: m.receiveCount,
        sentAt: m.sentAt,
      })
    }
    return out
  }

  async receive(options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const max = options.maxMessages ?? 1
    const visibility = options.visibilityTimeoutSeconds ?? this.visibilityTimeoutSeconds
    const deadline = Date.now() + (options.waitTimeSeconds ?? 0) * 1000
    for (;;) {
      const got = this.take(max, visibility)
      if (got.length || Date.now() >= deadline || options.signal?.aborted) return got
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t)
          this.waiters.delete(done)
          options.signal?.removeEventListener('abort', done)
          resolve()
        }
        const t = setTimeout(done, Math.min(50, Math.max(1, deadline - Date.now())))
        this.waiters.add(done)
        options.signal?.addEventListener('abort', done)
      })
    }
  }

  private byReceipt(handle: string): Stored {
    for (const m of this.messages.values()) if (m.receipt === handle) return m
    throw new Error(`unknown receipt handle ${handle}`)
  }

  async extend(handle: string, seconds: number): Promise<void> {
    this.byReceipt(handle).visibleAt = Date.now() + seconds * 1000
    if (seconds === 0) this.wake()
  }

  async ack(handle: string): Promise<void> {
    this.messages.delete(this.byReceipt(handle).id)
  }

  async release(handle: string): Promise<void> {
    this.byReceipt(handle).visibleAt = Date.now()
    this.wake()
  }

  async stats(): Promise<QueueStats> {
    const now = Date.now()
    let visible = 0
    let inFlight = 0
    let delayed = 0
    let oldest: number | undefined
    for (const m of this.messages.values()) {
      if (m.visibleAt <= now) visible++
      else if (m.delayed) delayed++
      else inFlight++
      oldest = Math.min(oldest ?? m.sentAt, m.sentAt)
    }
    return { visible, inFlight, delayed, oldestAgeSeconds: oldest === undefined ? 0 : (now - oldest) / 1000 }
  }
}

export function memoryQueueWithDeadLetter(
  visibilityTimeoutSeconds: number,
  maxReceiveCount: number,
): QueueWithDeadLetter {
  const deadLetter = new MemoryQueue('jobs-dlq', visibilityTimeoutSeconds)
  const queue = new MemoryQueue('jobs', visibilityTimeoutSeconds, { deadLetter, maxReceiveCount })
  return { queue, deadLetter, maxReceiveCount }
}
