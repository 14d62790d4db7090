/**
 * The Lambda entries as Lambda runs them: `handler` of functions/dead-letter.ts
 * and functions/cleanup.ts, configured only by environment variables
 * (PGPT_STORE=s3, PGPT_RECORDS=object), against s3rver behind the
 * conditional-write shim of test/servers/s3-server.ts (the job records need
 * If-Match). S3's listing carries no metadata, so cleanup's HEAD path runs here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ObjectJobStore } from '../../core/adapters/object-job-store.js'
import type { S3ObjectStore } from '../../core/adapters/s3-store.js'
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

  it('cleanup handler deletes expired objects, reading expiry by HEAD', async () => {
    const past = String(Date.now() - 1000)
    const future = String(Date.now() + 3_600_000)
    await store.put('files/file_expired', 'x', { metadata: { 'expires-at': past } })
    await store.put('files/file_kept', 'x', { metadata: { 'expires-at': future } })
    await store.put('results/job_x/out.jsonl', 'x', { metadata: { 'expires-at': past } })
    const listed = await store.list('files/')
    expect(listed.objects[0].metadata).toBeUndefined() // what makes the HEAD necessary
    const out = await cleanup()
    expect(out.deleted.sort()).toEqual(['files/file_expired', 'results/job_x/out.jsonl'])
    expect(await store.head('files/file_kept')).not.toBeNull()
    expect(await store.head('files/file_expired')).toBeNull()
  })
})
