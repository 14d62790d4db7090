/**
 * In-memory JobStore: records live as long as the process. For unit tests,
 * and the fallback of the Workers and Lambda entries when no durable records
 * are configured (they log that). Enforces the state machine of
 * core/ports/job-store.ts and passes the JobStore contract.
 */
import { newId } from '../ids.js'
import {
  checkRun,
  IllegalTransitionError,
  isTerminal,
  JOB_TRANSITIONS,
  type JobListOptions,
  type JobPage,
  type JobRecord,
  type JobState,
  type JobStore,
  type NewJob,
  type PurgeOptions,
  type TransitionPatch,
} from '../ports/job-store.js'

export class MemoryJobStore implements JobStore {
  readonly name = 'memory'
  private readonly jobs = new Map<string, JobRecord>()

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
    if (this.jobs.has(rec.id)) throw new Error(`MemoryJobStore: job '${rec.id}' exists`)
    this.jobs.set(rec.id, rec)
    return structuredClone(rec)
  }

  async get(tenant: string, id: string): Promise<JobRecord | null> {
    const r = this.jobs.get(id)
    return r && r.tenant === tenant ? structuredClone(r) : null
  }

  async getById(id: string): Promise<JobRecord | null> {
    const r = this.jobs.get(id)
    return r ? structuredClone(r) : null
  }

  async transition(id: string, to: JobState, patch: TransitionPatch = {}): Promise<JobRecord> {
    const r = this.jobs.get(id)
    if (!r) throw new Error(`MemoryJobStore: no job '${id}'`)
    checkRun(r, to, patch)
    if (!JOB_TRANSITIONS[r.state].includes(to)) throw new IllegalTransitionError(id, r.state, to)
    const now = Date.now()
    r.state = to
    r.updatedAt = now
    if (to === 'running') {
      r.attempts += 1
      r.startedAt = now
    }
    if (isTerminal(to)) r.finishedAt = now
    if (patch.output !== undefined) r.output = patch.output
    if (patch.error !== undefined) r.error = patch.error
    return structuredClone(r)
  }

  async requestCancel(tenant: string, id: string): Promise<JobRecord | null> {
    const r = this.jobs.get(id)
    if (!r || r.tenant !== tenant) return null
    if (isTerminal(r.state)) return structuredClone(r)
    r.cancelRequested = true
    r.updatedAt = Date.now()
    if (r.state === 'queued') return this.transition(id, 'canceled')
    return structuredClone(r)
  }

  async list(tenant: string, options: JobListOptions = {}): Promise<JobPage> {
    const limit = options.limit ?? 20
    const all = [...this.jobs.values()]
      .filter((r) => r.tenant === tenant && (!options.kind || r.kind === options.kind))
      .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
    const start = options.after ? all.filter((r) => r.id < options.after!) : all
    return { data: start.slice(0, limit).map((r) => structuredClone(r)), hasMore: start.length > limit }
  }

  async purgeFinished(o: PurgeOptions): Promise<string[]> {
    const gone = [...this.jobs.values()]
      .filter(
        (r) =>
          isTerminal(r.state) &&
          r.finishedAt !== undefined &&
          r.finishedAt < o.finishedBefore &&
          !o.keepKinds?.includes(r.kind),
      )
      .sort((a, b) => a.finishedAt! - b.finishedAt!)
      .slice(0, o.limit ?? 1000)
      .map((r) => r.id)
    for (const id of gone) this.jobs.delete(id)
    return gone
  }
}
