/** A minimal in-memory JobStore with the port's state machine, for unit tests of the worker loop. */
import { newId } from '../../core/ids.js'
import {
  IllegalTransitionError,
  isTerminal,
  JOB_TRANSITIONS,
  type JobListOptions,
  type JobPage,
  type JobRecord,
  type JobState,
  type JobStore,
  type NewJob,
  type TransitionPatch,
} from '../../core/ports/job-store.js'

export class MemoryJobStore implements JobStore {
  readonly jobs = new Map<string, JobRecord>()

  async create(job: NewJob): Promise<JobRecord> {
    const now = Date.now()
    const rec: JobRecord = {
      ...job,
      id: job.id ?? newId('job'),
      state: 'queued',
      attempts: 0,
      cancelRequested: false,
      createdAt: now,
      updatedAt: now,
    }
    this.jobs.set(rec.id, rec)
    return structuredClone(rec)
  }

  async get(tenant: string, id: string): Promise<JobRecord | null> {
    const j = this.jobs.get(id)
    return j && j.tenant === tenant ? structuredClone(j) : null
  }

  async getById(id: string): Promise<JobRecord | null> {
    const j = this.jobs.get(id)
    return j ? structuredClone(j) : null
  }

  async transition(id: string, to: JobState, patch: TransitionPatch = {}): Promise<JobRecord> {
    const j = this.jobs.get(id)
    if (!j) throw new Error(`no job ${id}`)
    if (!JOB_TRANSITIONS[j.state].includes(to)) throw new IllegalTransitionError(id, j.state, to)
    const now = Date.now()
    j.state = to
    j.updatedAt = now
    if (to === 'running') {
      j.attempts++
      j.startedAt = now
    }
    if (isTerminal(to)) j.finishedAt = now
    if (patch.output !== undefined) j.output = patch.output
    if (patch.error !== undefined) j.error = patch.error
    return structuredClone(j)
  }

  async requestCancel(tenant: string, id: string): Promise<JobRecord | null> {
    const j = this.jobs.get(id)
    if (!j || j.tenant !== tenant) return null
    if (isTerminal(j.state)) return structuredClone(j)
    j.cancelRequested = true
    if (j.state === 'queued') return this.transition(id, 'canceled')
    return structuredClone(j)
  }

  async list(tenant: string, options: JobListOptions = {}): Promise<JobPage> {
    const all = [...this.jobs.values()]
      .filter((j) => j.tenant === tenant && (!options.kind || j.kind === options.kind))
      .sort((a, b) => (a.id < b.id ? 1 : -1))
      .filter((j) => !options.after || j.id < options.after)
    const limit = options.limit ?? 20
    return { data: all.slice(0, limit).map((j) => structuredClone(j)), hasMore: all.length > limit }
  }
}
