/**
 * Job records: the durable state machine behind every queued piece of work.
 *
 *   queued ──► running ──► succeeded | failed | canceled
 *     │           │
 *     │           └─► queued   (released or redelivered after a crash: attempts grows)
 *     └─► canceled | failed
 *
 * Records are tenant-scoped: reads through the public API always name the
 * tenant, and another tenant's id reads as missing.
 */

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const
export type JobState = (typeof JOB_STATES)[number]
export const TERMINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'canceled']

/** Which transitions the state machine allows. */
export const JOB_TRANSITIONS: Record<JobState, readonly JobState[]> = {
  queued: ['running', 'canceled', 'failed'],
  running: ['succeeded', 'failed', 'canceled', 'queued'],
  succeeded: [],
  failed: [],
  canceled: [],
}

export const isTerminal = (s: JobState) => TERMINAL_STATES.includes(s)

export interface JobError {
  message: string
  code: string
}

export interface WebhookTarget {
  url: string
  /** Which events are delivered: start, output, completed. Empty means all. */
  eventsFilter: Array<'start' | 'output' | 'completed'>
}

export interface JobRecord {
  id: string
  tenant: string
  /** What the worker does: 'generation', 'batch', 'fine_tune', ... */
  kind: string
  state: JobState
  model?: string
  input: unknown
  output?: unknown
  error?: JobError
  /** How many times a worker has started this job. */
  attempts: number
  cancelRequested: boolean
  requestId?: string
  apiKeyId?: string
  webhook?: WebhookTarget
  metadata?: Record<string, string>
  createdAt: number
  updatedAt: number
  startedAt?: number
  finishedAt?: number
}

export type NewJob = Pick<JobRecord, 'tenant' | 'kind' | 'input'> &
  Partial<Pick<JobRecord, 'id' | 'model' | 'requestId' | 'apiKeyId' | 'webhook' | 'metadata'>>

export interface TransitionPatch {
  output?: unknown
  error?: JobError
  /**
   * Run fence: the `attempts` the writer saw (for a worker, its run number: the
   * record's attempts once it entered `running`). The store refuses the write
   * with StaleRunError, atomically with the state check, when the record's
   * attempts differ: another worker has taken the job over since (its lease
   * expired and the message went to someone else), and the old run must not
   * write over the new one. Omitted: no fence (the edge's own writes).
   */
  run?: number
}

export interface JobListOptions {
  /** Cursor: list jobs created before this id (newest first). */
  after?: string
  limit?: number
  kind?: string
}

export interface JobPage {
  data: JobRecord[]
  hasMore: boolean
}

export interface PurgeOptions {
  /** Epoch ms: finished jobs whose finishedAt is before this go. */
  finishedBefore: number
  /** Kinds never purged (e.g. `fine_tune`: the Fine-tuning API lists them for ever, as OpenAI does). */
  keepKinds?: readonly string[]
  /** Most records deleted by one call (the rest go next time). Default 1000. */
  limit?: number
}

export interface JobStore {
  create(job: NewJob): Promise<JobRecord>
  /** Tenant-scoped read: another tenant's job is null. */
  get(tenant: string, id: string): Promise<JobRecord | null>
  /** Internal read by id alone, for workers. */
  getById(id: string): Promise<JobRecord | null>
  /**
   * Move a job to `to`. Throws IllegalTransitionError when the state machine
   * forbids it (so two workers racing on one job cannot both finish it).
   * Entering `running` increments attempts and sets startedAt; entering a
   * terminal state sets finishedAt. With `patch.run`, throws StaleRunError
   * (an IllegalTransitionError) when the record's attempts differ from it.
   */
  transition(id: string, to: JobState, patch?: TransitionPatch): Promise<JobRecord>
  /** Mark cancel requested; a queued job is canceled at once. Returns the record. */
  requestCancel(tenant: string, id: string): Promise<JobRecord | null>
  list(tenant: string, options?: JobListOptions): Promise<JobPage>
  /**
   * Retention: deletes finished (terminal) jobs that ended before
   * `finishedBefore`, oldest first, and returns their ids. Queued and running
   * jobs are never touched. core/retention.ts calls it.
   */
  purgeFinished(options: PurgeOptions): Promise<string[]>
  close?(): Promise<void>
}

export class IllegalTransitionError extends Error {
  override readonly name: string = 'IllegalTransitionError'
  constructor(
    readonly jobId: string,
    readonly from: JobState,
    readonly to: JobState,
  ) {
    super(`Job ${jobId}: illegal transition ${from} -> ${to}`)
  }
}

/**
 * A write fenced by `TransitionPatch.run` came from a run that is no longer
 * the job's (its attempts moved on): the worker lost the job to another one.
 * An IllegalTransitionError, so code that treats "moved elsewhere" alike
 * needs nothing new; code that must not touch the new run's message checks
 * for this class first.
 */
export class StaleRunError extends IllegalTransitionError {
  override readonly name: string = 'StaleRunError'
  constructor(
    jobId: string,
    from: JobState,
    to: JobState,
    /** The run the writer belonged to. */
    readonly run: number,
    /** The record's attempts: the job's current run. */
    readonly currentRun: number,
  ) {
    super(jobId, from, to)
    this.message = `Job ${jobId}: run ${run} is stale (the job is on run ${currentRun}); refused ${from} -> ${to}`
  }
}

/** Throws StaleRunError when a fenced write (`patch.run`) does not belong to the record's current run. */
export function checkRun(rec: JobRecord, to: JobState, patch: TransitionPatch): void {
  if (patch.run !== undefined && patch.run !== rec.attempts)
    throw new StaleRunError(rec.id, rec.state, to, patch.run, rec.attempts)
}
