/**
 * Contract suite of the retention sweep (core/retention.ts) over one pair of
 * adapters: an ObjectStore and a JobStore. Every store must honour expiry
 * alike, because expiry lives in the records (no object tags): each test file
 * calls `testRetentionSweep({ name, make })` for its pair. The suite never skips.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { listAll } from '../../core/adapters/object-records.js'
import type { JobStore } from '../../core/ports/job-store.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import {
  BATCH_DATA_GRACE_MS,
  type BatchRecord,
  type BatchStatus,
  chunkKey,
  getChunk,
  newBatchId,
  putChunk,
  putNewBatch,
  putResult,
  resultKey,
} from '../../core/records/batches.js'
import {
  createFile,
  deleteFile,
  fileContentKey,
  fileMetaKey,
  getFileObject,
  getFileRecord,
  listFiles,
} from '../../core/records/files.js'
import { FINE_TUNE_KIND } from '../../core/records/fine-tunes.js'
import { sweepExpired } from '../../core/retention.js'

export interface MadeRetentionBackends {
  store: ObjectStore
  jobs: JobStore
  cleanup?: () => Promise<void>
}

export interface RetentionContractOptions {
  name: string
  make: () => Promise<MadeRetentionBackends>
}

const HOUR = 3600_000
const DAY = 24 * HOUR
/** A fixed start: the files' clock, far from the real one the job stores use. */
const T0 = Date.UTC(2026, 0, 1)

const keysUnder = async (store: ObjectStore, prefix: string) => {
  const out: string[] = []
  for await (const k of listAll(store, prefix)) out.push(k)
  return out
}

function batch(tenant: string, status: BatchStatus, endedAt: number | null): BatchRecord {
  const id = newBatchId()
  return {
    id,
    object: 'batch',
    endpoint: '/v1/completions',
    errors: null,
    input_file_id: 'file-abc',
    completion_window: '24h',
    status,
    output_file_id: null,
    error_file_id: null,
    created_at: Math.floor(T0 / 1000),
    in_progress_at: null,
    expires_at: Math.floor(T0 / 1000) + 86_400,
    finalizing_at: null,
    completed_at: status === 'completed' ? endedAt : null,
    failed_at: null,
    expired_at: null,
    cancelling_at: null,
    cancelled_at: status === 'cancelled' ? endedAt : null,
    request_counts: { total: 2, completed: 0, failed: 0 },
    metadata: null,
    webhook: null,
    internal: { tenant, jobId: id, requestId: null, apiKeyId: null, chunks: 1, done: {}, invalid: 0 },
  }
}

export function testRetentionSweep({ name, make }: RetentionContractOptions) {
  describe(`retention sweep: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.jobs.close?.())
      return made
    }

    it('files: expired ones read as missing at once, and the sweep deletes bytes and record', async () => {
      const { store, jobs } = await setup()
      const file = (filename: string, expiresAfterS: number | null, tenant = 'acme') =>
        createFile(store, tenant, { filename, purpose: 'batch', content: 'x\n', expiresAfterS }, T0)
      const hour = await file('hour.jsonl', 3600)
      const other = await file('other.jsonl', 3600, 'a/b~c') // a tenant that needs encoding
      const day = await file('day.jsonl', 86_400)
      const forever = await file('forever.jsonl', null)
      expect(hour.expires_at).toBe(hour.created_at + 3600)
      expect(hour.created_at).toBe(T0 / 1000)
      expect(forever.expires_at).toBeNull()

      // Before the hour: every file is there, and the sweep deletes nothing.
      const before = T0 + HOUR - 1000
      expect(await getFileObject(store, 'acme', hour.id, before)).toEqual(hour)
      expect((await sweepExpired({ store, jobs }, { now: before })).files).toEqual([])
      // At the hour: gone from reads and listings before any sweep.
      const at = T0 + HOUR
      expect(await getFileObject(store, 'acme', hour.id, at)).toBeNull()
      expect(await getFileObject(store, 'a/b~c', other.id, at)).toBeNull()
      expect((await listFiles(store, 'acme', { now: at })).data.map((f) => f.id).sort()).toEqual(
        [day.id, forever.id].sort(),
      )
      expect(await getFileRecord(store, 'acme', hour.id)).not.toBeNull() // still stored: only hidden

      const swept = await sweepExpired({ store, jobs }, { now: at })
      expect(swept.files.sort()).toEqual([`a/b~c/${other.id}`, `acme/${hour.id}`].sort())
      expect(swept.truncated).toBe(false)
      for (const [tenant, id] of [
        ['acme', hour.id],
        ['a/b~c', other.id],
      ]) {
        expect(await store.head(fileContentKey(tenant, id))).toBeNull()
        expect(await store.head(fileMetaKey(tenant, id))).toBeNull()
      }
      for (const f of [day, forever]) expect(await store.head(fileContentKey('acme', f.id))).not.toBeNull()
      // A second sweep at the same time finds nothing; a day later the day file goes, the other stays.
      expect((await sweepExpired({ store, jobs }, { now: at })).files).toEqual([])
      expect((await sweepExpired({ store, jobs }, { now: T0 + 400 * DAY })).files).toEqual([`acme/${day.id}`])
      expect(await getFileObject(store, 'acme', forever.id, T0 + 400 * DAY)).toEqual(forever)
    })

    it('files: a file deleted or rewritten since leaves no stale expiry behind', async () => {
      const { store, jobs } = await setup()
      const gone = await createFile(
        store,
        't',
        { filename: 'a', purpose: 'batch', content: 'a', expiresAfterS: 3600 },
        T0,
      )
      expect(await deleteFile(store, 't', gone.id, T0)).toBe(true)
      // Rewritten (same id, as a batch finalized twice) with a later expiry: the first expiry no longer applies.
      const first = await createFile(
        store,
        't',
        { id: 'file-rewritten', filename: 'b', purpose: 'batch_output', content: 'b', expiresAfterS: 3600 },
        T0,
      )
      const second = await createFile(
        store,
        't',
        { id: first.id, filename: 'b', purpose: 'batch_output', content: 'b', expiresAfterS: 3600 },
        T0 + 2 * HOUR,
      )
      expect((await sweepExpired({ store, jobs }, { now: T0 + 2 * HOUR })).files).toEqual([])
      expect(await getFileObject(store, 't', first.id, T0 + 2 * HOUR)).toEqual(second)
      expect((await sweepExpired({ store, jobs }, { now: T0 + 3 * HOUR })).files).toEqual([`t/${first.id}`])
      expect(await keysUnder(store, 'file-expiry/')).toEqual([])
      expect(await keysUnder(store, 'files/')).toEqual([])
    })

    it('files: a limit stops the sweep, and the next one goes on', async () => {
      const { store, jobs } = await setup()
      for (let i = 0; i < 5; i++)
        await createFile(
          store,
          't',
          { filename: `${i}`, purpose: 'batch', content: 'x', expiresAfterS: 3600 },
          T0,
        )
      const first = await sweepExpired({ store, jobs }, { now: T0 + HOUR, limit: 3 })
      expect(first.files).toHaveLength(3)
      expect(first.truncated).toBe(true)
      const second = await sweepExpired({ store, jobs }, { now: T0 + HOUR, limit: 3 })
      expect(second.files).toHaveLength(2)
      expect(second.truncated).toBe(false)
      expect((await listFiles(store, 't', { now: T0 })).data).toEqual([])
    })

    it('batch data: deleted once the batch has ended (after the grace), or when its record is gone', async () => {
      const { store, jobs } = await setup()
      const endedS = Math.floor(T0 / 1000) + 600
      const done = batch('t', 'completed', endedS)
      const cancelled = batch('u', 'cancelled', endedS)
      const running = batch('t', 'in_progress', null)
      const orphan = batch('t', 'completed', endedS) // its record is never written
      for (const b of [done, cancelled, running]) await putNewBatch(store, b)
      const line = { line: 1, custom_id: 'a', input: {} as never }
      for (const b of [done, cancelled, running, orphan]) {
        await putChunk(store, b.internal.tenant, b.id, 0, [line])
        await putResult(store, b.internal.tenant, b.id, {
          ok: true,
          line: 1,
          result: { id: 'r', custom_id: 'a', response: null, error: null },
        })
      }
      const soon = endedS * 1000 + BATCH_DATA_GRACE_MS - 1
      const early = await sweepExpired({ store, jobs }, { now: soon })
      expect(early.batches).toEqual([`t/${orphan.id}`])
      expect(await getChunk(store, 't', done.id, 0)).toEqual([line])

      const later = await sweepExpired({ store, jobs }, { now: soon + 1 })
      expect(later.batches.sort()).toEqual([`t/${done.id}`, `u/${cancelled.id}`].sort())
      expect(later.batchObjects).toBe(4)
      for (const b of [done, cancelled, orphan]) {
        expect(await store.head(chunkKey(b.internal.tenant, b.id, 0))).toBeNull()
        expect(await store.head(resultKey(b.internal.tenant, b.id, 1))).toBeNull()
      }
      // A running batch keeps its data however old; the batch records themselves stay.
      expect(await getChunk(store, 't', running.id, 0)).toEqual([line])
      expect(await store.head(resultKey('t', running.id, 1))).not.toBeNull()
      expect((await keysUnder(store, 'batches/')).length).toBe(3)
    })

    it('jobs: finished ones older than the retention go; unfinished and fine-tuning jobs stay', async () => {
      const { store, jobs } = await setup()
      const finished = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
      await jobs.transition(finished.id, 'running')
      await jobs.transition(finished.id, 'succeeded', { output: { text: 'a large result' } })
      const canceled = await jobs.create({ tenant: 't', kind: 'batch_chunk', input: {} })
      await jobs.requestCancel('t', canceled.id)
      const fineTune = await jobs.create({ tenant: 't', kind: FINE_TUNE_KIND, input: {} })
      await jobs.transition(fineTune.id, 'running')
      await jobs.transition(fineTune.id, 'succeeded')
      const queued = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
      const now = Date.now()

      // Within the retention, or with retention off: nothing goes.
      expect(
        (await sweepExpired({ store, jobs }, { now: now + 29 * DAY, jobRetentionDays: 30 })).jobs,
      ).toEqual([])
      expect(
        (await sweepExpired({ store, jobs }, { now: now + 400 * DAY, jobRetentionDays: 0 })).jobs,
      ).toEqual([])
      const swept = await sweepExpired({ store, jobs }, { now: now + 31 * DAY, jobRetentionDays: 30 })
      expect(swept.jobs.sort()).toEqual([finished.id, canceled.id].sort())
      expect(await jobs.getById(finished.id)).toBeNull()
      expect(await jobs.getById(canceled.id)).toBeNull()
      expect((await jobs.getById(fineTune.id))?.state).toBe('succeeded')
      expect((await jobs.getById(queued.id))?.state).toBe('queued')
      expect((await jobs.list('t')).data.map((j) => j.id).sort()).toEqual([fineTune.id, queued.id].sort())
    })
  })
}
