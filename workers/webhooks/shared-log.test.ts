/**
 * Webhook retries over the shared (object-store) delivery log, as the cloud
 * profiles run them: against s3rver (behind the conditional-write shim of
 * test/servers/s3-server.ts) and a folder, with a real HTTP receiver.
 *
 * - Scale-in: worker pod A (its own data dir, as a k8s emptyDir) runs a job
 *   whose webhook fails once and schedules the retry, then stops for good;
 *   pod B (another data dir) over the same records sends the retry when due,
 *   with the same webhook-id and body bytes.
 * - Race: two dispatchers over one store never send one attempt twice.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { ObjectDeliveryLog } from '../../core/adapters/object-delivery-log.js'
import { parseConfig } from '../../core/config.js'
import { createLogger } from '../../core/logger.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { openWiring } from '../../core/wiring.js'
import { nodeBackends } from '../../core/wiring-node.js'
import { sleepHandler } from '../../test/helpers/test-handlers.js'
import { type Receiver, startReceiver } from '../../test/helpers/webhook-receiver.js'
import { waitFor } from '../../test/helpers/worker-process-harness.js'
import { type S3Server, s3StoreOf, startS3Server } from '../../test/servers/s3-server.js'
import { parseWorkerSettings } from '../settings.js'
import { startWorkerProcess } from '../worker-process.js'
import { WebhookDispatcher, webhookId } from './dispatcher.js'

const KEY = 'shared-log-signing-key-0123456789abcdef0123'
const silent = createLogger({ service: 't', level: 'silent' })

let server: S3Server
beforeAll(async () => {
  server = await startS3Server()
})
afterAll(() => server?.stop())

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

let n = 0
const prefix = () => `shared-log-${process.pid}-${++n}/`

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgpt-pod-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  return dir
}

async function receiver(respond: Receiver['respond']): Promise<Receiver> {
  const r = await startReceiver(respond)
  cleanups.push(() => r.close())
  return r
}

describe('webhook retries over the shared delivery log', () => {
  it('a retry scheduled by a pod that is gone is sent by another pod, same webhook-id and bytes', async () => {
    const hook = await receiver((i) => (i === 0 ? 500 : 204))
    const recordsPrefix = prefix()
    /** One worker pod: its own data dir (pod-local disk), the records in the shared S3 bucket. */
    const startPod = async () => {
      const config = parseConfig({
        PGPT_PROFILE: 'local',
        PGPT_DATA_DIR: await tempDir(),
        PGPT_RECORDS: 'object',
        PGPT_WEBHOOK_SIGNING_KEY: KEY,
        PGPT_WEBHOOK_TIMEOUT_MS: '2000',
        PGPT_SHUTDOWN_GRACE_S: '2',
      })
      const wiring = openWiring(config, {
        ...nodeBackends(config),
        store: () => s3StoreOf(server, { prefix: recordsPrefix }),
      })
      const pod = await startWorkerProcess({
        config,
        settings: parseWorkerSettings({
          PGPT_WORKER_KINDS: 'none',
          PGPT_WORKER_WAIT_S: '1',
          PGPT_DEAD_LETTER_INTERVAL_S: '0',
          PGPT_WEBHOOK_RETRY_SCHEDULE_MS: '2500',
        }),
        logger: silent,
        wiring,
        handlers: async () => ({ 'test.sleep': sleepHandler }),
      })
      const stop = async () => {
        await pod.shutdown()
        await wiring.close()
      }
      cleanups.push(stop)
      return { wiring, stop }
    }
    const shared = new ObjectDeliveryLog({ store: s3StoreOf(server, { prefix: recordsPrefix }) })
    // The test's own reads poll: under load s3rver can serve a read racing a write empty (S3 would not).
    const log = { get: (id: string) => shared.get(id).catch(() => null) }

    const a = await startPod()
    const job = await a.wiring.records().jobs.create({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 1 },
      webhook: { url: hook.url, eventsFilter: ['completed'] },
    })
    await a.wiring.queue().queue.send(JSON.stringify({ jobId: job.id, kind: job.kind }))
    const id = webhookId(job.id, 'completed')
    await waitFor(async () => (await log.get(id))?.attempt === 1, 10_000, 'the first attempt logged')
    // Scale-in: pod A and its disk are gone before the retry is due.
    await a.stop()
    expect(await log.get(id)).toMatchObject({ status: 'pending', responseCode: 500 })
    expect(hook.received).toHaveLength(1)

    await startPod()
    await waitFor(async () => (await log.get(id))?.status === 'succeeded', 10_000, 'pod B to deliver')
    expect(hook.received).toHaveLength(2)
    expect(hook.received.map((r) => r.headers['webhook-id'])).toEqual([id, id])
    expect(hook.received[1].body).toBe(hook.received[0].body)
    expect(hook.received[1].at - hook.received[0].at).toBeGreaterThanOrEqual(2000)
    const body = new Webhook(tenantWebhookSecret(KEY, 'acme')).verify(
      hook.received[1].body,
      hook.received[1].headers as Record<string, string>,
    )
    expect(body).toMatchObject({ id: job.id, status: 'succeeded' })
    expect(await log.get(id)).toMatchObject({ attempt: 2, responseCode: 204 })
  })

  const stores: Array<[string, () => Promise<() => ObjectStore>]> = [
    [
      'a folder',
      async () => {
        const root = await tempDir()
        return () => new FsObjectStore({ root })
      },
    ],
    [
      's3rver',
      async () => {
        const p = prefix()
        return () => s3StoreOf(server, { prefix: p })
      },
    ],
  ]
  it.each(stores)('two dispatchers over %s never send one attempt twice', async (_name, open) => {
    const client = await open()
    // Each delivery fails its first attempt, then succeeds: retries race too.
    const seen = new Map<string, number>()
    const hook = await receiver((_i, req) => {
      const id = String(req.headers['webhook-id'])
      seen.set(id, (seen.get(id) ?? 0) + 1)
      return seen.get(id) === 1 ? 503 : 200
    })
    const dispatchers = [0, 1].map(
      () =>
        new WebhookDispatcher({
          log: new ObjectDeliveryLog({ store: client() }),
          secretFor: (t) => tenantWebhookSecret(KEY, t),
          retryScheduleMs: [30],
          jitter: 0,
          timeoutMs: 2000,
          allowPrivate: true,
          pollIntervalMs: 5,
          concurrency: 4,
          logger: silent,
        }),
    )
    for (const d of dispatchers) {
      d.start()
      cleanups.push(() => d.stop())
    }
    const jobIds = Array.from({ length: 8 }, (_, i) => `job_race${i}`)
    await Promise.all(
      jobIds.map((jobId, i) =>
        dispatchers[i % 2].onJobEvent(
          {
            id: jobId,
            tenant: 'acme',
            kind: 'generation',
            state: 'succeeded',
            input: {},
            attempts: 1,
            cancelRequested: false,
            createdAt: 1,
            updatedAt: 1,
            webhook: { url: hook.url, eventsFilter: [] },
          },
          { jobId, run: 1, seq: 2, type: 'completed', data: null, at: Date.now() },
        ),
      ),
    )
    const log = new ObjectDeliveryLog({ store: client() })
    const ids = jobIds.map((j) => webhookId(j, 'completed'))
    await waitFor(
      async () => (await Promise.all(ids.map((id) => log.get(id)))).every((d) => d?.status === 'succeeded'),
      20_000,
      'every delivery to succeed',
    )
    // Exactly two attempts each (one failure, one success): no attempt was sent twice.
    expect(Object.fromEntries(seen)).toEqual(Object.fromEntries(ids.map((id) => [id, 2])))
    expect(hook.received).toHaveLength(2 * ids.length)
    for (const id of ids) expect(await log.get(id)).toMatchObject({ attempt: 2, responseCode: 200 })
  })
})
