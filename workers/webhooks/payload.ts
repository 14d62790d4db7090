/**
 * The job object as the API returns it (`GET /v1/jobs/{id}`), which is also the
 * body of every webhook. Times are Unix seconds, as OpenAI's objects use; unset
 * fields are null, never missing, so clients can rely on the shape. The fields
 * are those of edge/routes/jobs.ts `jobView`; the edge may import `toJobView`
 * from here so the API and the webhooks can never drift apart.
 */
import type { JobRecord, JobState, WebhookTarget } from '../../core/ports/job-store.js'

export interface JobView {
  id: string
  object: 'job'
  kind: string
  model: string | null
  status: JobState
  created_at: number
  started_at: number | null
  completed_at: number | null
  request_id: string | null
  input: unknown
  output: unknown
  error: { message: string; code: string } | null
  metadata: Record<string, string> | null
  webhook: string | null
  webhook_events_filter: WebhookTarget['eventsFilter'] | null
  cancel_requested: boolean
  attempts: number
  urls: { get: string; cancel: string; stream: string }
}

const secs = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000))

/** Serialise a job record; `overrides.output` sets the output as of an event (the data of an `output` event). */
export function toJobView(r: JobRecord, overrides: { output?: unknown } = {}): JobView {
  const base = `/v1/jobs/${r.id}`
  return {
    id: r.id,
    object: 'job',
    kind: r.kind,
    model: r.model ?? null,
    status: r.state,
    created_at: secs(r.createdAt) as number,
    started_at: secs(r.startedAt),
    completed_at: secs(r.finishedAt),
    request_id: r.requestId ?? null,
    input: r.input,
    output: 'output' in overrides ? overrides.output : (r.output ?? null),
    error: r.error ?? null,
    metadata: r.metadata ?? null,
    webhook: r.webhook?.url ?? null,
    webhook_events_filter: r.webhook ? r.webhook.eventsFilter : null,
    cancel_requested: r.cancelRequested,
    attempts: r.attempts,
    urls: { get: base, cancel: `${base}/cancel`, stream: `${base}/stream` },
  }
}
