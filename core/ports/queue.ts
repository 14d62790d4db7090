/**
 * Queue port: at-least-once delivery with visibility timeouts, the shape of SQS.
 * A received message stays invisible for `visibilityTimeoutSeconds`; the worker
 * `extend`s it while working (heartbeat) and `ack`s it when done. A message
 * received more than `maxReceiveCount` times without an ack moves to the
 * dead-letter queue. Bodies are strings (JSON by convention) so every adapter
 * stores them the same way.
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
  send(body: string, options?: SendOptions): Promise<{ id: string }>
  receive(options?: ReceiveOptions): Promise<QueueMessage[]>
  /** Heartbeat: keep the delivery invisible for `seconds` more from now. */
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
