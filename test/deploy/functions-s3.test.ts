/**
 * The Lambda entries as Lambda runs them: `handler` of functions/dead-letter.ts
 * and functions/cleanup.ts, configured only by environment variables
 * (PGPT_STORE=s3, PGPT_RECORDS=object), against s3rver behind the
 * conditional-write shim of test/servers/s3-server.ts (the job records need
 * If-Match). The cleanup sweeps what the edge and the workers wrote to the
 * bucket: expired files, an ended batch's data and old finished jobs.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { ObjectJobStore } from '../../core/adapters/object-job-store.js'
import type { S3ObjectStore } from '../../core/adapters/s3-store.js'
import { type BatchRecord, chunkKey, newBatchId, putChunk, putNewBatch } from '../../core/records/batches.js'
import { createFile, fileContentKey, fileMetaKey, getFileObject } from '../../core/records/files.js'
import { handler as cleanup } from '../../functions/cleanup.js'
import { handler as deadLetter } from '../../functions/dead-letter.js'
import { type S3Server, s3StoreOf, startS3Server } from '../servers/s3-server.js'

let server: S3Server
let store: S3ObjectStore
const saved = { ...process.env }

beforeAll(async () => {
  server = await startS3Server()
  Object.assign(process.env, {
    PGPT_PROFILE: 'aws',
    PGPT_LOG_LEVEL: 'silent',
    PGPT_STORE: 's3',
    PGPT_RECORDS: 'object',
    PGPT_S3_BUCKET: server.bucket,
    PGPT_S3_ENDPOINT: server.endpoint,
    PGPT_S3_FORCE_PATH_STYLE: 'true',
    PGPT_MAX_RECEIVE_COUNT: '4',
    PGPT_WEBHOOK_SIGNING_KEY: 's'.repeat(32),
    AWS_REGION: server.region,
    AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
  })
  for (const k of ['PGPT_EDGE_URL', 'PGPT_CONFIG_FILE', 'PGPT_API_KEY']) delete process.env[k]
  store = s3StoreOf(server)
})
afterAll(async () => {
  process.env = saved
  await server?.stop()
})

describe('Lambda entries over S3', () => {
  it('dead-letter handler marks the job failed in the bucket’s records', async () => {
    const jobs = new ObjectJobStore({ store })
    const job = await jobs.create({ tenant: 'acme', kind: 'generation', input: {} })
    await jobs.transition(job.id, 'running')
    const out = await deadLetter({
      Records: [
        {
          messageId: 'm1',
          receiptHandle: 'rh',
          body: JSON.stringify({ jobId: job.id, kind: 'generation' }),
          attributes: { ApproximateReceiveCount: '4', SentTimestamp: String(Date.now()) },
        },
      ],
    })
    expect(out.batchItemFailures).toEqual([])
    expect(await jobs.getById(job.id)).toMatchObject({
      state: 'failed',
      error: { code: 'dead_lettered', message: 'dead-lettered after 4 deliveries' },
    })
  })

  it('cleanup handler deletes expired files, an ended batch’s data and old finished jobs from the bucket', async () => {
    const HOUR = 3600_000
    const now = Date.now()
    // Files as the edge writes them: one whose hour is up, one with a day to go, one with no expiry.
    const expired = await createFile(
      store,
      'acme',
      { filename: 'old.jsonl', purpose: 'batch', content: 'x\n', expiresAfterS: 3600 },
      now - HOUR - 1000,
    )
    const kept = await createFile(store, 'acme', {
      filename: 'new.jsonl',
      purpose: 'batch',
      content: 'y\n',
      expiresAfterS: 86_400,
    })
    const forever = await createFile(store, 'acme', {
      filename: 'ft.jsonl',
      purpose: 'fine-tune',
      content: 'z\n',
    })
    // A batch that ended two hours ago, its chunk still in the bucket; and a running one.
    const ended = batchRecord('completed', Math.floor((now - 2 * HOUR) / 1000))
    const running = batchRecord('in_progress', null)
    for (const b of [ended, running]) {
      await putNewBatch(store, b)
      await putChunk(store, 'acme', b.id, 0, [])
    }
    // A job that finished 40 days ago (PGPT_JOB_RETENTION_DAYS defaults to 30), and one that just did.
    // (The old one is written by the same adapter with its clock 40 days back, over memory, then copied
    // into the bucket: S3 refuses requests signed 40 days ago.)
    const then = new MemoryObjectStore()
    vi.useFakeTimers({ toFake: ['Date'], now: now - 40 * 24 * HOUR })
    const past = new ObjectJobStore({ store: then })
    const old = await past.create({ tenant: 'acme', kind: 'generation', input: {} })
    await past.transition(old.id, 'running')
    await past.transition(old.id, 'succeeded', { output: 'done' })
    vi.useRealTimers()
    for (const o of (await then.list('')).objects) await store.put(o.key, (await then.get(o.key))!)
    const jobs = new ObjectJobStore({ store })
    expect((await jobs.list('acme')).data.map((j) => j.id)).toContain(old.id)
    const recent = await jobs.create({ tenant: 'acme', kind: 'generation', input: {} })
    await jobs.transition(recent.id, 'running')
    await jobs.transition(recent.id, 'succeeded', { output: 'done' })

    const out = await cleanup()
    expect(out.files).toEqual([`acme/${expired.id}`])
    expect(out.batches).toEqual([`acme/${ended.id}`])
    expect(out.jobs).toEqual([old.id])
    expect(out.truncated).toBe(false)
    expect(await store.head(fileContentKey('acme', expired.id))).toBeNull()
    expect(await store.head(fileMetaKey('acme', expired.id))).toBeNull()
    expect(await getFileObject(store, 'acme', kept.id)).toEqual(kept)
    expect(await getFileObject(store, 'acme', forever.id)).toEqual(forever)
    expect(await store.head(chunkKey('acme', ended.id, 0))).toBeNull()
    expect(await store.head(chunkKey('acme', running.id, 0))).not.toBeNull()
    expect(await jobs.getById(old.id)).toBeNull()
    expect((await jobs.getById(recent.id))?.state).toBe('succeeded')
    // Nothing more is due: a second run deletes nothing.
    expect(await cleanup()).toMatchObject({ files: [], batches: [], jobs: [] })
  })
})

function batchRecord(status: 'completed' | 'in_progress', completedAt: number | null): BatchRecord {
  const id = newBatchId()
  const created = Math.floor(Date.now() / 1000) - 3 * 3600
  return {
    id,
    object: 'batch',
    endpoint: '/v1/completions',
    errors: null,
    input_file_id: 'file-x',
    completion_window: '24h',
    status,
    output_file_id: null,
    error_file_id: null,
    created_at: created,
    in_progress_at: created,
    expires_at: created + 86_400,
    finalizing_at: null,
    completed_at: completedAt,
    failed_at: null,
    expired_at: null,
    cancelling_at: null,
    cancelled_at: null,
    request_counts: { total: 0, completed: 0, failed: 0 },
    metadata: null,
    webhook: null,
    internal: { tenant: 'acme', jobId: id, requestId: null, apiKeyId: null, chunks: 1, done: {}, invalid: 0 },
  }
}
