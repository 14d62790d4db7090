/**
 * The Lambda handlers of the AWS deploy, over the ObjectJobStore on a folder
 * (FsObjectStore; the same adapter runs over S3 in production):
 * functions/dead-letter.ts marks dead-lettered jobs failed and reports store
 * failures as batch item failures. (functions/cleanup.ts runs the retention
 * sweep of core/retention.ts: core/retention.test.ts over each adapter, and
 * functions-s3.test.ts as Lambda runs it.)
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { ObjectJobStore } from '../../core/adapters/object-job-store.js'
import { createLogger } from '../../core/logger.js'
import type { JobStore } from '../../core/ports/job-store.js'
import { createDeadLetterHandler, type SqsEventRecord } from '../../functions/dead-letter.js'

const logger = createLogger({ service: 'test', level: 'silent' })
const dirs: string[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})
async function folderStore() {
  const root = await mkdtemp(join(tmpdir(), 'pgpt-fn-'))
  dirs.push(root)
  return new FsObjectStore({ root })
}

const record = (messageId: string, body: unknown): SqsEventRecord => ({
  messageId,
  receiptHandle: `rh-${messageId}`,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: { ApproximateReceiveCount: '3', SentTimestamp: String(Date.now()) },
})

describe('functions/dead-letter', () => {
  it('marks running and queued jobs failed, leaves finished ones, drops junk', async () => {
    const jobs = new ObjectJobStore({ store: await folderStore() })
    const running = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    await jobs.transition(running.id, 'running')
    const queued = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    const done = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    await jobs.transition(done.id, 'running')
    await jobs.transition(done.id, 'succeeded', { output: 'ok' })
    const handler = createDeadLetterHandler({ jobs, maxReceiveCount: 3, logger })
    const out = await handler({
      Records: [
        record('m1', { jobId: running.id, kind: 'generation' }),
        record('m2', { jobId: queued.id, kind: 'generation' }),
        record('m3', { jobId: done.id, kind: 'generation' }),
        record('m4', 'not json'),
        record('m5', { jobId: 'job_missing', kind: 'generation' }),
      ],
    })
    expect(out.batchItemFailures).toEqual([])
    expect(out.result).toEqual({ failed: [running.id, queued.id], alreadyFinished: 1, dropped: 2 })
    for (const id of [running.id, queued.id])
      expect(await jobs.getById(id)).toMatchObject({
        state: 'failed',
        error: { code: 'dead_lettered', message: 'dead-lettered after 3 deliveries' },
      })
    expect((await jobs.getById(done.id))?.state).toBe('succeeded')
  })

  it('reports the messages it could not handle as batch item failures', async () => {
    const real = new ObjectJobStore({ store: await folderStore() })
    const a = await real.create({ tenant: 't', kind: 'k', input: {} })
    const b = await real.create({ tenant: 't', kind: 'k', input: {} })
    let calls = 0
    const flaky: JobStore = Object.assign(Object.create(real), {
      getById: async (id: string) => {
        if (++calls > 1) throw new Error('store unreachable')
        return real.getById(id)
      },
    })
    const handler = createDeadLetterHandler({ jobs: flaky, maxReceiveCount: 5, logger })
    const out = await handler({
      Records: [
        record('m1', { jobId: a.id, kind: 'k' }),
        record('m2', { jobId: b.id, kind: 'k' }),
        record('m3', '{}'),
      ],
    })
    expect((await real.getById(a.id))?.state).toBe('failed')
    expect((await real.getById(b.id))?.state).toBe('queued')
    expect(out.batchItemFailures).toEqual([{ itemIdentifier: 'm2' }, { itemIdentifier: 'm3' }])
  })
})
