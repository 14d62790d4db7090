import { describe, expect, it } from 'vitest'
import type { JobRecord } from '../../core/ports/job-store.js'
import { toJobView } from './payload.js'

const rec: JobRecord = {
  id: 'job_1',
  tenant: 't',
  kind: 'generation',
  state: 'failed',
  input: { prompt: 'hi' },
  error: { code: 'x', message: 'y' },
  attempts: 2,
  cancelRequested: false,
  webhook: { url: 'https://h.example/w', eventsFilter: ['completed'] },
  createdAt: 1_700_000_000_999,
  updatedAt: 1_700_000_003_000,
  startedAt: 1_700_000_001_500,
  finishedAt: 1_700_000_002_000,
}

describe('toJobView', () => {
  it('renders the API job object: seconds, nulls for unset fields, urls', () => {
    expect(toJobView(rec)).toEqual({
      id: 'job_1',
      object: 'job',
      kind: 'generation',
      model: null,
      status: 'failed',
      created_at: 1_700_000_000,
      started_at: 1_700_000_001,
      completed_at: 1_700_000_002,
      request_id: null,
      input: { prompt: 'hi' },
      output: null,
      error: { code: 'x', message: 'y' },
      metadata: null,
      webhook: 'https://h.example/w',
      webhook_events_filter: ['completed'],
      cancel_requested: false,
      attempts: 2,
      urls: { get: '/v1/jobs/job_1', cancel: '/v1/jobs/job_1/cancel', stream: '/v1/jobs/job_1/stream' },
    })
  })

  it('an output override shows the output as of an event', () => {
    expect(
      toJobView({ ...rec, state: 'running', output: undefined }, { output: { text: 'part' } }).output,
    ).toEqual({
      text: 'part',
    })
  })
})
