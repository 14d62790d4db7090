/**
 * Events port: job progress and token events, from the worker that runs a job
 * to whoever streams it (the edge's SSE routes).
 *
 * Events are ordered by (run, seq). `run` is the job's run number (the
 * record's `attempts` once a worker entered `running`); `seq` counts 1, 2, 3,
 * ... within a run. A job that is redelivered (its worker lost the lease) runs
 * again under a higher run number and publishes from seq 1 again; adapters
 * then drop what they kept of the older run and deliver the new run's events,
 * and drop any event of an older run that still comes in (the fenced worker
 * of a run that lost the job must not write into the next one). A subscriber
 * that reconnects resumes after the last (run, seq) it saw.
 */

export type JobEventType = 'start' | 'token' | 'progress' | 'output' | 'completed' | 'failed' | 'canceled'

export interface JobEvent {
  jobId: string
  /**
   * The run that published it: the job record's attempts once its worker
   * entered `running` (1, 2, ...). A terminal event published outside a worker's
   * run (the edge canceling a queued job, a dead-lettered job failing) carries
   * the record's attempts at that moment and `FINAL_SEQ`, so it orders after
   * anything that run published.
   */
  run: number
  /** 1, 2, 3, ... per run, assigned by the publisher. */
  seq: number
  type: JobEventType
  data: unknown
  /** Epoch ms. */
  at: number
}

/** A place in a job's events: (run, seq). */
export interface EventPosition {
  run: number
  seq: number
}

/** Seq of a terminal event published outside a worker's run: after anything that run published. */
export const FINAL_SEQ = 1_000_000_000

export interface SubscribeOptions {
  /** Replay retained events after this position (default: all of them). */
  after?: EventPosition
  signal?: AbortSignal
}

export interface Events {
  readonly name: string
  publish(event: JobEvent): Promise<void>
  /**
   * Events of one job, in (run, seq) order, until a terminal event (completed,
   * failed, canceled) or until the signal aborts. When a newer run starts, its
   * events follow (its `start` event first): the older run's are superseded.
   */
  subscribe(jobId: string, options?: SubscribeOptions): AsyncIterable<JobEvent>
}

export const TERMINAL_EVENT_TYPES: readonly JobEventType[] = ['completed', 'failed', 'canceled']

/** Whether `e` comes after position `p` in a job's events (a newer run, or a later seq of the same run). */
export const isAfter = (e: EventPosition, p: EventPosition | undefined): boolean =>
  !p || e.run > p.run || (e.run === p.run && e.seq > p.seq)
