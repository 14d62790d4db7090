/**
 * The Lambda handlers of the AWS deploy, over the ObjectJobStore on a folder
 * (FsObjectStore; the same adapter runs over S3 in production):
 * functions/dead-letter.ts marks dead-lettered jobs failed, sends their
 * `failed` webhook (to a real local receiver) and reports store failures and
 * failed webhook attempts as batch item failures. (functions/cleanup.ts runs the retention
 * sweep of core/retention.ts: core/retention.test.ts over each adapter, and
 * functions-s3.test.ts as Lambda runs it.)
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { ObjectJobStore } from '../../core/adapters/object-job-store.js'
import { createLogger } from '../../core/logger.js'
import type { JobStore } from '../../core/ports/job-store.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { createDeadLetterHandler, type SqsEventRecord } from '../../functions/dead-letter.js'
import { webhookId } from '../../workers/webhooks/dispatcher.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'

const logger = createLogger({ service: 'test', level: 'silent' })
const dirs: string[] = []
const receivers: Receiver[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
  for (const r of receivers.splice(0)) await r.close()
})
async function receiver(respond?: Receiver['respond']) {
  const r = await startReceiver(respond)
  receivers.push(r)
  return r
}
async function folderStore() {
  const root = await mkdtemp(join(tmpdir(), 'pgpt-fn-'))
  dirs.push(root)
  return new FsObjectStore({ root })
}

const record = (messageId: string, body: unknown, receives = 3): SqsEventRecord => ({
  messageId,
  receiptHandle: `rh-${messageId}`,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: { ApproximateReceiveCount: String(receives), SentTimestamp: String(Date.now()) },
})

const SIGNING_KEY = 'k'.repeat(32)
const webhooks = {
  secretFor: (t: string) => tenantWebhookSecret(SIGNING_KEY, t),
  timeoutMs: 5_000,
  allowPrivate: true,
}

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

  it("sends a dead-lettered job its signed `failed` webhook, as the workers' dispatcher would", async () => {
    const hook = await receiver()
    const jobs = new ObjectJobStore({ store: await folderStore() })
    const job = await jobs.create({
      tenant: 'acme',
      kind: 'generation',
      input: {},
      requestId: 'req_1',
      webhook: { url: hook.url, eventsFilter: ['completed'] },
    })
    await jobs.transition(job.id, 'running')
    const quiet = await jobs.create({ tenant: 'acme', kind: 'generation', input: {} })
    const handler = createDeadLetterHandler({ jobs, maxReceiveCount: 3, logger, webhooks })
    const out = await handler({
      Records: [
        record('m1', { jobId: job.id, kind: 'generation' }),
        record('m2', { jobId: quiet.id, kind: 'generation' }),
      ],
    })
    expect(out.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(1)
    const [got] = hook.received
    const body = new Webhook(tenantWebhookSecret(SIGNING_KEY, 'acme')).verify(
      got.body,
      got.headers as Record<string, string>,
    ) as Record<string, unknown>
    expect(body).toMatchObject({
      id: job.id,
      object: 'job',
      status: 'failed',
      error: { code: 'dead_lettered', message: 'dead-lettered after 3 deliveries' },
      webhook: hook.url,
    })
    expect(got.headers).toMatchObject({
      'webhook-id': webhookId(job.id, 'completed'),
      'pgpt-webhook-event': 'completed',
      'x-request-id': 'req_1',
    })
    // Another tenant's secret does not verify it.
    expect(() =>
      new Webhook(tenantWebhookSecret(SIGNING_KEY, 'other')).verify(
        got.body,
        got.headers as Record<string, string>,
      ),
    ).toThrow()
  })

  it('a receiver that fails gets the message redelivered, with the same webhook-id, until it answers or the bound', async () => {
    let answer = 500
    const hook = await receiver(() => answer)
    const jobs = new ObjectJobStore({ store: await folderStore() })
    const job = await jobs.create({
      tenant: 'acme',
      kind: 'generation',
      input: {},
      webhook: { url: hook.url, eventsFilter: [] },
    })
    const handler = createDeadLetterHandler({
      jobs,
      maxReceiveCount: 3,
      logger,
      webhooks: { ...webhooks, maxAttempts: 3 },
    })
    const msg = { jobId: job.id, kind: 'generation' }
    const first = await handler({ Records: [record('m1', msg, 4)] })
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: 'm1' }])
    expect((await jobs.getById(job.id))?.state).toBe('failed')
    // SQS delivers it again: the job is already failed, only the webhook is retried.
    const second = await handler({ Records: [record('m1', msg, 5)] })
    expect(second.batchItemFailures).toEqual([{ itemIdentifier: 'm1' }])
    answer = 204
    const third = await handler({ Records: [record('m1', msg, 6)] })
    expect(third.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(3)
    expect(new Set(hook.received.map((r) => r.headers['webhook-id']))).toEqual(
      new Set([webhookId(job.id, 'completed')]),
    )
    expect(new Set(hook.received.map((r) => r.body)).size).toBe(1)
    // Past maxReceiveCount + maxAttempts receives the webhook is given up: the message is acknowledged.
    answer = 500
    const last = await handler({ Records: [record('m1', msg, 6)] })
    expect(last.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(4)
  })

  it('a webhook the SSRF guard refuses is not retried', async () => {
    const hook = await receiver()
    const jobs = new ObjectJobStore({ store: await folderStore() })
    const job = await jobs.create({
      tenant: 'acme',
      kind: 'generation',
      input: {},
      webhook: { url: hook.url, eventsFilter: [] },
    })
    const handler = createDeadLetterHandler({
      jobs,
      maxReceiveCount: 3,
      logger,
      webhooks: { ...webhooks, allowPrivate: false },
    })
    const out = await handler({ Records: [record('m1', { jobId: job.id, kind: 'generation' })] })
    expect(out.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(0)
    expect((await jobs.getById(job.id))?.state).toBe('failed')
  })
})
