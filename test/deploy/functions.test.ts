/**
 * The Lambda handlers of the AWS deploy, over the ObjectJobStore on a folder
 * (FsObjectStore; the same adapter runs over S3 in production):
 * functions/dead-letter.ts marks dead-lettered jobs failed, logs their
 * `failed` webhook in the durable delivery log (objects in the same folder)
 * and attempts it at once (to a real local receiver), and reports store
 * failures (records or delivery log) as batch item failures; a failed attempt
 * is retried from the log by a workers' dispatcher after the function returned. (functions/cleanup.ts runs the retention
 * sweep of core/retention.ts: core/retention.test.ts over each adapter, and
 * functions-s3.test.ts as Lambda runs it.)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { ObjectDeliveryLog } from '../../core/adapters/object-delivery-log.js'
import { ObjectJobStore } from '../../core/adapters/object-job-store.js'
import { createLogger } from '../../core/logger.js'
import type { JobStore } from '../../core/ports/job-store.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { createDeadLetterHandler, type SqsEventRecord } from '../../functions/dead-letter.js'
import { WebhookDispatcher, webhookId } from '../../workers/webhooks/dispatcher.js'
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
/** A job in object records over a fresh folder, with a webhook for every event. */
async function jobWithWebhook(url: string) {
  const store = await folderStore()
  const jobs = new ObjectJobStore({ store })
  const job = await jobs.create({
    tenant: 'acme',
    kind: 'generation',
    input: {},
    webhook: { url, eventsFilter: [] },
  })
  return { store, jobs, job }
}
const waitFor = async (ok: () => Promise<boolean>, what: string) => {
  for (const end = Date.now() + 5_000; !(await ok()); await new Promise((r) => setTimeout(r, 20)))
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
}

const record = (messageId: string, body: unknown, receives = 3): SqsEventRecord => ({
  messageId,
  receiptHandle: `rh-${messageId}`,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: { ApproximateReceiveCount: String(receives), SentTimestamp: String(Date.now()) },
})

const SIGNING_KEY = 'k'.repeat(32)
/** The Lambda's webhook settings, its delivery log in `store` (the bucket in production). */
const webhooksOver = (store: ObjectStore) => ({
  log: new ObjectDeliveryLog({ store }),
  secretFor: (t: string) => tenantWebhookSecret(SIGNING_KEY, t),
  timeoutMs: 5_000,
  allowPrivate: true,
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

  it("sends a dead-lettered job its signed `failed` webhook, as the workers' dispatcher would", async () => {
    const hook = await receiver()
    const store = await folderStore()
    const jobs = new ObjectJobStore({ store })
    const job = await jobs.create({
      tenant: 'acme',
      kind: 'generation',
      input: {},
      requestId: 'req_1',
      webhook: { url: hook.url, eventsFilter: ['completed'] },
    })
    await jobs.transition(job.id, 'running')
    const quiet = await jobs.create({ tenant: 'acme', kind: 'generation', input: {} })
    const webhooks = webhooksOver(store)
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
    expect(await webhooks.log.get(webhookId(job.id, 'completed'))).toMatchObject({
      status: 'succeeded',
      attempt: 1,
      payload: got.body,
    })
    // Another tenant's secret does not verify it.
    expect(() =>
      new Webhook(tenantWebhookSecret(SIGNING_KEY, 'other')).verify(
        got.body,
        got.headers as Record<string, string>,
      ),
    ).toThrow()
  })

  it('a failed first attempt is retried from the durable log by a worker after the function returned', async () => {
    const hook = await receiver((i) => (i === 0 ? 500 : 204))
    const { store, jobs, job } = await jobWithWebhook(hook.url)
    const webhooks = { ...webhooksOver(store), retryScheduleMs: [300] }
    const handler = createDeadLetterHandler({ jobs, maxReceiveCount: 3, logger, webhooks })
    const msg = { jobId: job.id, kind: 'generation' }
    // The message is done with once the webhook is logged, whatever its first attempt got.
    expect((await handler({ Records: [record('m1', msg)] })).batchItemFailures).toEqual([])
    const id = webhookId(job.id, 'completed')
    expect(hook.received).toHaveLength(1)
    expect(await webhooks.log.get(id)).toMatchObject({ status: 'pending', attempt: 1, responseCode: 500 })
    // SQS delivers the message again (at least once): the delivery is logged once, not attempted again.
    expect((await handler({ Records: [record('m1', msg, 4)] })).batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(1)

    // The function has returned; a worker's dispatcher (another process: its own store client) sends the retry.
    const worker = new WebhookDispatcher({
      log: new ObjectDeliveryLog({ store: new FsObjectStore({ root: dirs[0] }) }),
      secretFor: webhooks.secretFor,
      allowPrivate: true,
      pollIntervalMs: 20,
      logger,
    })
    worker.start()
    try {
      await waitFor(async () => (await webhooks.log.get(id))?.status === 'succeeded', 'the retry')
    } finally {
      await worker.stop()
    }
    expect(hook.received).toHaveLength(2)
    expect(hook.received.map((r) => r.headers['webhook-id'])).toEqual([id, id])
    expect(hook.received[1].body).toBe(hook.received[0].body)
    expect(hook.received[1].at - hook.received[0].at).toBeGreaterThanOrEqual(200)
    expect(await webhooks.log.get(id)).toMatchObject({ attempt: 2, responseCode: 204 })
  })

  it('a delivery log it cannot write leaves the message for SQS to deliver again', async () => {
    const hook = await receiver()
    const { store, jobs, job } = await jobWithWebhook(hook.url)
    // A store whose root is a file: every read and write of the log fails.
    const file = join(dirs[0], 'not-a-folder')
    await writeFile(file, '')
    const handler = createDeadLetterHandler({
      jobs,
      maxReceiveCount: 3,
      logger,
      webhooks: {
        ...webhooksOver(store),
        log: new ObjectDeliveryLog({ store: new FsObjectStore({ root: file }) }),
      },
    })
    const out = await handler({ Records: [record('m1', { jobId: job.id, kind: 'generation' })] })
    expect(out.batchItemFailures).toEqual([{ itemIdentifier: 'm1' }])
    expect((await jobs.getById(job.id))?.state).toBe('failed')
    expect(hook.received).toHaveLength(0)
    // Redelivered, with the log back: the job is already failed, the webhook is logged and sent.
    const again = createDeadLetterHandler({ jobs, maxReceiveCount: 3, logger, webhooks: webhooksOver(store) })
    const next = await again({ Records: [record('m1', { jobId: job.id, kind: 'generation' }, 4)] })
    expect(next.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(1)
  })

  it('a webhook the SSRF guard refuses is not retried', async () => {
    const hook = await receiver()
    const { store, jobs, job } = await jobWithWebhook(hook.url)
    const webhooks = { ...webhooksOver(store), allowPrivate: false }
    const handler = createDeadLetterHandler({ jobs, maxReceiveCount: 3, logger, webhooks })
    const out = await handler({ Records: [record('m1', { jobId: job.id, kind: 'generation' })] })
    expect(out.batchItemFailures).toEqual([])
    expect(hook.received).toHaveLength(0)
    expect((await jobs.getById(job.id))?.state).toBe('failed')
    expect(await webhooks.log.get(webhookId(job.id, 'completed'))).toMatchObject({
      status: 'failed',
      attempt: 1,
    })
  })
})
