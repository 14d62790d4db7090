/**
 * JobStore over the ObjectStore port (core/ports/job-store.ts): job records
 * on S3, R2, MinIO or a folder, shared by an edge on Lambda/Workers and any
 * number of GPU workers. Needs a backend that enforces conditional puts
 * (S3 since Nov 2024, R2, MinIO, FsObjectStore); construction throws otherwise.
 *
 * Layout, under `prefix` (default `jobs/`):
 *
 *   by-id/<id>                                   the record, one JSON object
 *   by-tenant/<tenant>/<10^15−createdAt>~<id>~<kind>   an empty index entry
 *   finished/<finishedAt>~<id>                   an empty entry per finished job (retention)
 *
 * - create: the record with If-None-Match: * (a duplicate id is refused), then
 *   its index entry. A crash between the two leaves a record that is readable
 *   by id but not listed.
 * - transition / requestCancel: compare-and-swap (object-records.ts
 *   casUpdate): read etag and record, check the state machine, put with
 *   If-Match; on PreconditionFailedError read again and re-check, so of two
 *   workers racing to finish one job exactly one wins and the other gets
 *   IllegalTransitionError. A fenced write (`patch.run`) is checked against
 *   the record's attempts in the same swap (StaleRunError).
 * - list: the tenant's index lists newest first (inverted time); kind is in
 *   the entry's key, so filtering reads no records. The cursor `after` is a
 *   job id: its entry key is computed from its record and the listing skips
 *   to it. The port's list cursor is opaque (S3's ContinuationToken), so the
 *   skip walks the entries before it: a page deep in a long history costs
 *   one list call per 1000 newer jobs. Jobs created in the same millisecond
 *   list in id order.
 * - purgeFinished: the `finished/` entries list oldest first, so a purge reads
 *   only the entries older than its cutoff. A terminal transition writes its
 *   entry before the compare-and-swap (a crash in between leaves an entry
 *   whose record is not finished: the purge drops such stale entries, and a
 *   job is never left without one); a cancel of a queued job writes it after.
 *   Jobs finished before this layout have no entry and are not purged.
 *
 * The adapter never closes the ObjectStore it was given (it may be shared).
 */
import { newId } from '../ids.js'
import {
  checkRun,
  IllegalTransitionError,
  isTerminal,
  JOB_STATES,
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
import type { ObjectStore } from '../ports/object-store.js'
import { createError } from './adapter-error.js'
import {
  casUpdate,
  decodeSegment,
  encodeSegment,
  getJson,
  invertTime,
  listAll,
  mapLimit,
  normalisePrefix,
  padTime,
  putIfAbsent,
  requireConditionalPut,
  toJson,
} from './object-records.js'

export const OBJECT_JOB_STORE = 'object-job-store'

export interface ObjectJobStoreOptions {
  /** The backend; must enforce conditional puts (`supportsConditionalPut`). */
  store: ObjectStore
  /** Key prefix of the records. Default `jobs/`. */
  prefix?: string
}

const DEFAULT_LIMIT = 20
const MAX_LIMIT = 1000

export class ObjectJobStore implements JobStore {
  readonly name = OBJECT_JOB_STORE
  private readonly store: ObjectStore
  private readonly prefix: string

  constructor(options: ObjectJobStoreOptions) {
    requireConditionalPut(OBJECT_JOB_STORE, options?.store)
    this.store = options.store
    this.prefix = normalisePrefix(options.prefix, 'jobs/')
  }

  private recordKey(id: string) {
    return `${this.prefix}by-id/${encodeSegment(id)}`
  }

  private tenantPrefix(tenant: string) {
    return `${this.prefix}by-tenant/${encodeSegment(tenant)}/`
  }

  private indexKey(rec: Pick<JobRecord, 'tenant' | 'createdAt' | 'id' | 'kind'>) {
    return `${this.tenantPrefix(rec.tenant)}${invertTime(rec.createdAt)}~${encodeSegment(rec.id)}~${encodeSegment(rec.kind)}`
  }

  private finishedPrefix() {
    return `${this.prefix}finished/`
  }

  private finishedKey(id: string, finishedAt: number) {
    return `${this.finishedPrefix()}${padTime(finishedAt)}~${encodeSegment(id)}`
  }

  async create(job: NewJob): Promise<JobRecord> {
    if (!job.tenant) throw createError(OBJECT_JOB_STORE, 'tenant is required')
    if (!job.kind) throw createError(OBJECT_JOB_STORE, 'kind is required')
    const now = Date.now()
    const rec: JobRecord = {
      id: job.id ?? newId('job'),
      tenant: job.tenant,
      kind: job.kind,
      state: 'queued',
      input: job.input ?? null,
      attempts: 0,
      cancelRequested: false,
      createdAt: now,
      updatedAt: now,
    }
    if (job.model !== undefined) rec.model = job.model
    if (job.requestId !== undefined) rec.requestId = job.requestId
    if (job.apiKeyId !== undefined) rec.apiKeyId = job.apiKeyId
    if (job.webhook !== undefined) rec.webhook = job.webhook
    if (job.metadata !== undefined) rec.metadata = job.metadata
    if (!(await putIfAbsent(this.store, this.recordKey(rec.id), toJson(rec))))
      throw createError(OBJECT_JOB_STORE, `job ${rec.id} already exists`)
    await this.store.put(this.indexKey(rec), '')
    return rec
  }

  async get(tenant: string, id: string): Promise<JobRecord | null> {
    const rec = await this.getById(id)
    return rec && rec.tenant === tenant ? rec : null
  }

  async getById(id: string): Promise<JobRecord | null> {
    if (!id) return null
    return getJson<JobRecord>(this.store, this.recordKey(id))
  }

  async transition(id: string, to: JobState, patch: TransitionPatch = {}): Promise<JobRecord> {
    if (!JOB_STATES.includes(to)) throw createError(OBJECT_JOB_STORE, `unknown job state '${to}'`)
    const now = Date.now()
    // A terminal transition's retention entry goes first: a crash after the swap still leaves one.
    const entry = isTerminal(to) ? this.finishedKey(id, now) : undefined
    if (entry) await this.store.put(entry, '')
    try {
      return await casUpdate<JobRecord, JobRecord>(
        OBJECT_JOB_STORE,
        this.store,
        this.recordKey(id),
        (current) => {
          if (!current) throw createError(OBJECT_JOB_STORE, `job ${id} not found`)
          checkRun(current, to, patch)
          if (!JOB_TRANSITIONS[current.state].includes(to))
            throw new IllegalTransitionError(id, current.state, to)
          const next: JobRecord = { ...current, state: to, updatedAt: now }
          if (to === 'running') {
            next.attempts = current.attempts + 1
            next.startedAt = now
          }
          if (isTerminal(to)) next.finishedAt = now
          if (patch.output !== undefined) next.output = patch.output
          if (patch.error !== undefined) next.error = patch.error
          return { write: next, result: next }
        },
      )
    } catch (err) {
      // Best effort: an entry left here is dropped by the purge (its record is not finished then).
      if (entry) await this.store.delete(entry).catch(() => {})
      throw err
    }
  }

  async requestCancel(tenant: string, id: string): Promise<JobRecord | null> {
    if (!id) return null
    let canceledAt: number | undefined
    const rec = await casUpdate<JobRecord, JobRecord | null>(
      OBJECT_JOB_STORE,
      this.store,
      this.recordKey(id),
      (current) => {
        if (!current || current.tenant !== tenant) return { done: null }
        canceledAt = undefined
        if (current.state !== 'queued' && current.state !== 'running') return { done: current }
        const now = Date.now()
        const next: JobRecord = { ...current, cancelRequested: true, updatedAt: now }
        if (current.state === 'queued') {
          next.state = 'canceled'
          next.finishedAt = now
          canceledAt = now
        }
        return { write: next, result: next }
      },
    )
    if (canceledAt !== undefined) await this.store.put(this.finishedKey(id, canceledAt), '')
    return rec
  }

  async purgeFinished(o: PurgeOptions): Promise<string[]> {
    const limit = o.limit ?? 1000
    const purged: string[] = []
    const prefix = this.finishedPrefix()
    for await (const key of listAll(this.store, prefix)) {
      if (purged.length >= limit) break
      const [time, idPart] = key.slice(prefix.length).split('~')
      // Entries list oldest first: the first one at or past the cutoff ends the walk.
      if (idPart === undefined || !(Number(time) < o.finishedBefore)) break
      const id = decodeSegment(idPart)
      const rec = await this.getById(id)
      if (rec && o.keepKinds?.includes(rec.kind)) continue
      if (rec && isTerminal(rec.state) && rec.finishedAt !== undefined && rec.finishedAt < o.finishedBefore) {
        // Index entry, then the record, then this entry: a crash between leaves what the next purge finishes.
        await this.store.delete(this.indexKey(rec))
        await this.store.delete(this.recordKey(id))
        purged.push(id)
      }
      // Purged, or stale (no record; or a transition that lost wrote it and the job ended later or not yet).
      await this.store.delete(key)
    }
    return purged
  }

  async list(tenant: string, options: JobListOptions = {}): Promise<JobPage> {
    const limit = options.limit ?? DEFAULT_LIMIT
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT)
      throw createError(OBJECT_JOB_STORE, `limit must be an integer from 1 to ${MAX_LIMIT}, got ${limit}`)
    let skipThrough: string | undefined
    if (options.after !== undefined) {
      const cursor = await this.get(tenant, options.after)
      if (!cursor) return { data: [], hasMore: false }
      skipThrough = this.indexKey(cursor)
    }
    const kind = options.kind === undefined ? undefined : encodeSegment(options.kind)
    const data: JobRecord[] = []
    let pending: string[] = []
    // Reads the records of the pending entries; an entry whose record is gone is skipped.
    const flush = async () => {
      const recs = await mapLimit(pending, 16, (id) => this.getById(id))
      for (const r of recs) if (r && r.tenant === tenant) data.push(r)
      pending = []
    }
    for await (const key of listAll(this.store, this.tenantPrefix(tenant))) {
      if (skipThrough !== undefined && key <= skipThrough) continue
      const [, idPart, kindPart] = key.slice(key.lastIndexOf('/') + 1).split('~')
      if (idPart === undefined || (kind !== undefined && kindPart !== kind)) continue
      pending.push(decodeSegment(idPart))
      if (data.length + pending.length > limit) {
        await flush()
        if (data.length > limit) break
      }
    }
    await flush()
    return { data: data.slice(0, limit), hasMore: data.length > limit }
  }
}
