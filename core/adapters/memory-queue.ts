/**
 * In-memory Queue: the Workers/Lambda entries when no SQS queue is configured
 * (one isolate's memory: jobs do not survive it, and no worker outside the
 * isolate can see them), and the unit tests of the edge and the workers.
 * Visibility timeouts, delays, long polls and receive counts as SQS; with a
 * `redrive` (memoryQueueWithDeadLetter), a message received maxReceiveCount
 * times moves to the dead-letter queue on its next receive, as SQS does; an
 * extend beyond `maxHoldSeconds` from the receive is refused, as SQS refuses
 * one beyond 12 hours. It
 * passes the Queue contract suite; the durable queues are
 * core/adapters/local-queue.ts and sqs-queue.ts.
 */
import { newId } from '../ids.js'
import {
  HoldLimitError,
  type Queue,
  type QueueMessage,
  type QueueStats,
  type QueueWithDeadLetter,
  type ReceiveOptions,
  type SendOptions,
  SQS_MAX_HOLD_SECONDS,
} from '../ports/queue.js'
import { createError } from './adapter-error.js'

const MEMORY_QUEUE = 'memory-queue'

interface Entry {
  id: string
  body: string
  sentAt: number
  visibleAt: number
  receiveCount: number
  handle?: string
  /** When the latest delivery was received (epoch ms). */
  receivedAt?: number
}

export interface MemoryQueueOptions {
  /** Default visibility timeout of a receive, seconds. Default 30. */
  visibilityTimeoutSeconds?: number
  /** Where a message goes after maxReceiveCount receives. */
  redrive?: { deadLetter: MemoryQueue; maxReceiveCount: number }
  /** Longest hold of a delivery from its receive, seconds (1–43200). Default 43200, SQS's; tests use a few seconds. */
  maxHoldSeconds?: number
}

/** SQS's limits, so code tested here does not ask SQS for more than it gives. */
function check(ok: boolean, message: string): void {
  if (!ok) throw createError(MEMORY_QUEUE, message)
}

export class MemoryQueue implements Queue {
  readonly name: string
  readonly maxHoldSeconds: number
  /** Messages in send order (stats and tests read them; send/receive/ack change them). */
  readonly entries: Entry[] = []
  private readonly waiters = new Set<() => void>()
  private readonly visibilityTimeoutSeconds: number
  private readonly redrive: MemoryQueueOptions['redrive']

  constructor(name = 'memory', options: MemoryQueueOptions = {}) {
    this.name = name
    this.visibilityTimeoutSeconds = options.visibilityTimeoutSeconds ?? 30
    this.redrive = options.redrive
    this.maxHoldSeconds = options.maxHoldSeconds ?? SQS_MAX_HOLD_SECONDS
    check(
      Number.isInteger(this.maxHoldSeconds) &&
        this.maxHoldSeconds >= 1 &&
        this.maxHoldSeconds <= SQS_MAX_HOLD_SECONDS,
      `maxHoldSeconds must be an integer from 1 to ${SQS_MAX_HOLD_SECONDS}`,
    )
    check(
      this.visibilityTimeoutSeconds <= this.maxHoldSeconds,
      'visibilityTimeoutSeconds must not exceed maxHoldSeconds',
    )
  }

  async send(body: string, options: SendOptions = {}): Promise<{ id: string }> {
    const delay = options.delaySeconds ?? 0
    check(
      Number.isInteger(delay) && delay >= 0 && delay <= 900,
      'delaySeconds must be an integer from 0 to 900',
    )
    const now = Date.now()
    const e: Entry = { id: newId('msg'), body, sentAt: now, visibleAt: now + delay * 1000, receiveCount: 0 }
    this.entries.push(e)
    this.wake()
    return { id: e.id }
  }

  async receive(options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const max = options.maxMessages ?? 1
    const wait = options.waitTimeSeconds ?? 0
    check(Number.isInteger(max) && max >= 1 && max <= 10, 'maxMessages must be an integer from 1 to 10')
    check(wait >= 0 && wait <= 20, 'waitTimeSeconds must be from 0 to 20')
    const visibility = options.visibilityTimeoutSeconds ?? this.visibilityTimeoutSeconds
    check(visibility <= this.maxHoldSeconds, 'visibilityTimeoutSeconds must not exceed maxHoldSeconds')
    const deadline = Date.now() + wait * 1000
    for (;;) {
      const got = this.take(max, visibility)
      if (got.length || Date.now() >= deadline || options.signal?.aborted) return got
      // Woken by a send or release; the timer catches delays and visibility timeouts running out.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          this.waiters.delete(done)
          options.signal?.removeEventListener('abort', done)
          resolve()
        }
        const timer = setTimeout(done, Math.min(50, Math.max(1, deadline - Date.now())))
        this.waiters.add(done)
        options.signal?.addEventListener('abort', done)
      })
    }
  }

  /** A message dead-lettered from another memory queue: the same id and body, as SQS moves it. */
  private adopt(e: Entry, now: number): void {
    this.entries.push({ id: e.id, body: e.body, sentAt: e.sentAt, visibleAt: now, receiveCount: 0 })
    this.wake()
  }

  private wake(): void {
    for (const w of this.waiters) w()
  }

  private take(max: number, visibilitySeconds: number): QueueMessage[] {
    const now = Date.now()
    const out: QueueMessage[] = []
    for (let i = 0; i < this.entries.length && out.length < max; i++) {
      const e = this.entries[i]!
      if (e.visibleAt > now) continue
      if (this.redrive && e.receiveCount >= this.redrive.maxReceiveCount) {
        this.entries.splice(i--, 1)
        this.redrive.deadLetter.adopt(e, now)
        continue
      }
      e.receiveCount += 1
      e.handle = newId('rh')
      e.visibleAt = now + visibilitySeconds * 1000
      e.receivedAt = now
      out.push({
        id: e.id,
        receiptHandle: e.handle,
        body: e.body,
        receiveCount: e.receiveCount,
        sentAt: e.sentAt,
        receivedAt: now,
      })
    }
    return out
  }

  /** The message a handle was given for, while that delivery is the latest (an older handle does nothing). */
  private byHandle(handle: string): Entry | undefined {
    return this.entries.find((e) => e.handle === handle)
  }

  async extend(receiptHandle: string, seconds: number): Promise<void> {
    const e = this.byHandle(receiptHandle)
    const until = Date.now() + seconds * 1000
    if (e?.receivedAt !== undefined && until > e.receivedAt + this.maxHoldSeconds * 1000)
      throw new HoldLimitError(this.name, this.maxHoldSeconds)
    if (e) e.visibleAt = until
    if (seconds === 0) this.wake()
  }

  async ack(receiptHandle: string): Promise<void> {
    const i = this.entries.findIndex((e) => e.handle === receiptHandle)
    if (i >= 0) this.entries.splice(i, 1)
  }

  async release(receiptHandle: string): Promise<void> {
    const e = this.byHandle(receiptHandle)
    if (e) e.visibleAt = Date.now()
    this.wake()
  }

  async stats(): Promise<QueueStats> {
    const now = Date.now()
    let visible = 0
    let inFlight = 0
    let delayed = 0
    let oldest = now // dead-lettered messages keep their sentAt, so the first entry need not be the oldest
    for (const e of this.entries) {
      if (e.visibleAt <= now) visible++
      else if (e.receiveCount > 0) inFlight++
      else delayed++
      oldest = Math.min(oldest, e.sentAt)
    }
    return { visible, inFlight, delayed, oldestAgeSeconds: (now - oldest) / 1000 }
  }
}

/** A memory queue and its dead-letter queue (`jobs`, `jobs-dlq`). */
export function memoryQueueWithDeadLetter(
  visibilityTimeoutSeconds: number,
  maxReceiveCount: number,
  options: Pick<MemoryQueueOptions, 'maxHoldSeconds'> = {},
): QueueWithDeadLetter {
  const deadLetter = new MemoryQueue('jobs-dlq', { visibilityTimeoutSeconds, ...options })
  const queue = new MemoryQueue('jobs', {
    visibilityTimeoutSeconds,
    redrive: { deadLetter, maxReceiveCount },
    ...options,
  })
  return { queue, deadLetter, maxReceiveCount }
}
