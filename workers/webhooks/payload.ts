/**
 * The job object as the API returns it (`GET /v1/jobs/{id}`), which is also the
 * body of every webhook. Times are Unix seconds, as OpenAI's objects use; unset
 * fields are null, never missing, so clients can rely on the shape.
 * The edge imports `toJobView` from here so the API and webhooks never differ.
 */
import type { JobRecord, JobState } from '../../core/ports/job-store.js'

export interface JobView {
  id: string
  object: 'job'
  kind: string
  model: string | null
  status: JobState
  output: unknown
  error: { message: string; code: string } | null
  attempts: number
  cancel_requested: boolean
  request_id: string | null
  metadata: Record<string, string> | null
  created_at: number
  started_at: number | null
  finished_at: number | null
}

const seconds = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000))

/** Serialise a job record; `overrides` set fields as of an event (e.g. the partial output of an `output` event). */
export function toJobView(job: JobRecord, overrides: Partial<Pick<JobView, 'output'>> = {}): JobView {
  return {
    id: job.id,
    object: 'job',
    kind: job.kind,
    model: job.model ?? null,
    status: job.state,
    output: 'output' in overrides ? overrides.output : (job.output ?? null),
    error: job.error ?? null,
    attempts: job.attempts,
    cancel_requested: job.cancelRequested,
    request_id: job.requestId ?? null,
    metadata: job.metadata ?? null,
    created_at: seconds(job.createdAt) as number,
    started_at: seconds(job.startedAt),
    finished_at: seconds(job.finishedAt),
  }
}
