/**
 * The jobs queue and its dead-letter queue (sst.config.ts): redrive, retention
 * and visibility, from the same settings the workers read (core/config.ts
 * PGPT_VISIBILITY_TIMEOUT_S, PGPT_MAX_RECEIVE_COUNT), so the queue's redrive
 * fires after the number of receives the workers put in their reason text.
 *
 * Rules (SQS developer guide, "Amazon SQS dead-letter queues" and "Using
 * Lambda with Amazon SQS"):
 * - A message's expiry counts from its first enqueue, also in the DLQ, so the
 *   DLQ keeps messages longer than the source queue (here the 14-day maximum).
 * - A queue that feeds a Lambda function (the DLQ feeds functions/dead-letter.ts)
 *   has a visibility timeout of at least six times the function's timeout.
 */

const DAY = 86_400
export const MAX_RETENTION_S = 14 * DAY

export interface QueueSettings {
  /** PGPT_VISIBILITY_TIMEOUT_S: a received job stays invisible this long (the worker heartbeats). */
  visibilityTimeoutS: number
  /** PGPT_MAX_RECEIVE_COUNT: deliveries before SQS moves a message to the DLQ. */
  maxReceiveCount: number
  /** Source queue retention, seconds. Default 4 days. */
  retentionS?: number
  /** Timeout of the DLQ's Lambda consumer, seconds. Default 60. */
  deadLetterFunctionTimeoutS?: number
}

export interface QueuePlan {
  queue: { visibilityTimeoutS: number; retentionS: number; maxReceiveCount: number }
  deadLetter: { visibilityTimeoutS: number; retentionS: number }
  deadLetterFunctionTimeoutS: number
}

export function planQueues(s: QueueSettings): QueuePlan {
  const retentionS = s.retentionS ?? 4 * DAY
  const fnTimeout = s.deadLetterFunctionTimeoutS ?? 60
  if (!Number.isInteger(s.visibilityTimeoutS) || s.visibilityTimeoutS < 0 || s.visibilityTimeoutS > 43_200)
    throw new Error('visibilityTimeoutS must be an integer from 0 to 43200 (SQS limit)')
  if (!Number.isInteger(s.maxReceiveCount) || s.maxReceiveCount < 1 || s.maxReceiveCount > 1000)
    throw new Error('maxReceiveCount must be an integer from 1 to 1000 (SQS redrive limit)')
  if (retentionS < 60 || retentionS > MAX_RETENTION_S)
    throw new Error(`retentionS must be from 60 to ${MAX_RETENTION_S} (SQS limits)`)
  if (retentionS >= MAX_RETENTION_S)
    throw new Error('the source queue must keep messages less than the DLQ (14 days): lower retentionS')
  if (fnTimeout < 1 || fnTimeout > 900 || 6 * fnTimeout > 43_200)
    throw new Error('deadLetterFunctionTimeoutS must be from 1 to 900 seconds')
  return {
    queue: { visibilityTimeoutS: s.visibilityTimeoutS, retentionS, maxReceiveCount: s.maxReceiveCount },
    deadLetter: { visibilityTimeoutS: 6 * fnTimeout, retentionS: MAX_RETENTION_S },
    deadLetterFunctionTimeoutS: fnTimeout,
  }
}

/** SST durations are strings: `60 seconds`. */
export const seconds = (s: number) => `${s} seconds` as const
