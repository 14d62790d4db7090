/**
 * Queue port: at-least-once delivery with visibility timeouts, the shape of SQS.
 * A received message stays invisible for `visibilityTimeoutSeconds`; the worker
 * `extend`s it while working (heartbeat) and `ack`s it when done. A message
 * received more than `maxReceiveCount` times without an ack moves to the
 * dead-letter queue. Bodies are strings (JSON by convention) so every adapter
 * stores them the same way.
 *
 * A delivery cannot be held for ever: SQS refuses to extend a message's
 * visibility beyond 12 hours from the receive ("If you try to extend the
 * visibility timeout beyond 12 hours, your request is rejected",
 * ChangeMessageVisibility API reference). Every adapter has such a cap,
 * `maxHoldSeconds`, and refuses an extend beyond it with a HoldLimitError, so
 * a worker running a longer job must give the job back before it (the worker
 * loop does: workers/loop/lease.ts).
 */

export interface QueueMessage {
  /** Stable id of the message across deliveries. */
  id: string
  /** Handle of this delivery; changes with every receive. */
  receiptHandle: string
  body: string
  /** How many times the message has been delivered, this delivery included (1 on first). */
  receiveCount: number
  /** Epoch ms when the message was first sent. */
  sentAt: number
  /**
   * Epoch ms of this delivery's receive, never later than the queue's own
   * reckoning of it: the hold cap (`Queue.maxHoldSeconds`) counts from here.
   */
  receivedAt: number
}

/** SQS's hold cap, 12 hours; the other adapters default to it, so code tested on them meets it as on SQS. */
export const SQS_MAX_HOLD_SECONDS = 43_200

/** An extend refused because it would hold the delivery beyond the queue's `maxHoldSeconds` from its receive. */
export class HoldLimitError extends Error {
  override readonly name = 'HoldLimitError'
  constructor(
    readonly queue: string,
    readonly maxHoldSeconds: number,
    options?: { cause?: unknown },
  ) {
    super(
      `${queue}: a delivery cannot be held beyond ${maxHoldSeconds} s from its receive; give the job back and send it again`,
      options,
    )
  }
}

export interface SendOptions {
  /** Hold the message back for this many seconds (0–900, as SQS). */
  delaySeconds?: number
}

export interface ReceiveOptions {
  /** 1–10, as SQS. Default 1. */
  maxMessages?: number
  /** Long-poll: wait up to this many seconds for a message (0–20). Default 0. */
  waitTimeSeconds?: number
  /** Override the queue's visibility timeout for this delivery. */
  visibilityTimeoutSeconds?: number
  /** Abort a long poll early (shutdown). */
  signal?: AbortSignal
}

export interface QueueStats {
  /** Messages ready to be received. */
  visible: number
  /** Messages received and not yet acked or expired. */
  inFlight: number
  /** Messages sent with a delay that has not yet passed. */
  delayed: number
  /** Age in seconds of the oldest message not yet acked, when the adapter knows it. */
  oldestAgeSeconds?: number
}

export interface Queue {
  readonly name: string
  /** Longest a delivery can stay invisible from its receive, seconds (SQS: 43 200, 12 hours). */
  readonly maxHoldSeconds: number
  send(body: string, options?: SendOptions): Promise<{ id: string }>
  receive(options?: ReceiveOptions): Promise<QueueMessage[]>
  /**
   * Heartbeat: keep the delivery invisible for `seconds` more from now. Throws
   * HoldLimitError when that ends beyond `maxHoldSeconds` from the receive.
   */
  extend(receiptHandle: string, seconds: number): Promise<void>
  /** Done: delete the message. */
  ack(receiptHandle: string): Promise<void>
  /** Give the message back now (visibility 0), e.g. on graceful shutdown. */
  release(receiptHandle: string): Promise<void>
  stats(): Promise<QueueStats>
  close?(): Promise<void>
}

/** A queue together with its dead-letter queue, as every adapter is configured. */
export interface QueueWithDeadLetter {
  queue: Queue
  deadLetter: Queue
  /** Deliveries after which a message moves to the dead-letter queue. */
  maxReceiveCount: number
}
