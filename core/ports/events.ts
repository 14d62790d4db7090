/**
 * Events port: job progress and token events, from the worker that runs a job
 * to whoever streams it (the edge's SSE routes). Events of one job carry an
 * increasing `seq` so a subscriber that reconnects can resume after the last
 * one it saw.
 */

export type JobEventType = 'start' | 'token' | 'progress' | 'output' | 'completed' | 'failed' | 'canceled'

export interface JobEvent {
  jobId: string
  /** 1, 2, 3, ... per job, assigned by the publisher. */
  seq: number
  type: JobEventType
  data: unknown
  /** Epoch ms. */
  at: number
}

export interface SubscribeOptions {
  /** Replay retained events with seq greater than this. */
  afterSeq?: number
  signal?: AbortSignal
}

export interface Events {
  readonly name: string
  publish(event: JobEvent): Promise<void>
  /**
   * Events of one job, in seq order, until a terminal event (completed, failed,
   * canceled) or until the signal aborts.
   */
  subscribe(jobId: string, options?: SubscribeOptions): AsyncIterable<JobEvent>
}

export const TERMINAL_EVENT_TYPES: readonly JobEventType[] = ['completed', 'failed', 'canceled']
