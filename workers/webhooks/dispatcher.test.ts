import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterEach, describe, expect, it } from 'vitest'
import { SqliteDeliveryLog } from '../../core/adapters/sqlite-delivery-log.js'
import { createLogger } from '../../core/logger.js'
import { createMetrics } from '../../core/metrics.js'
import type { JobEvent } from '../../core/ports/events.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { type Receiver, startReceiver } from '../../test/helpers/webhook-receiver.js'
import { WebhookDispatcher, type WebhookDispatcherOptions, webhookId } from './dispatcher.js'

const KEY = 'test-signing-key-0123456789abcdef0123456789'
const secretFor = (tenant: string) => tenantWebhookSecret(KEY, tenant)
const silent = createLogger({ service: 't', level: 'silent' })

async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 5000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<T>
    if (Date.now() > end) throw new Error('waitFor: timed out')
    await new Promise((r) => setTimeout(r, 10))
  }
}

const job = (over: Partial<JobRecord> = {}): JobRecord => ({
  id: 'job_abc',
  tenant: 'tenant_a',
  kind: 'generation',
  state: 'running',
  model: 'prometheus-mini',
  input: {},
  attempts: 1,
  cancelRequested: false,
  requestId: 'req_1',
  createdAt: 1_700_000_000_000,
  updatedAt: 1_700_000_000_000,
  startedAt: 1_700_000_001_000,
  ...over,
})
const ev = (type: JobEvent['type'], seq: number, data: unknown = null): JobEvent => ({
  jobId: 'job_abc',
  run: 1,
  seq,
  type,
  data,
  at: Date.now(),
})

describe('WebhookDispatcher', () => {
  const cleanups: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c()
    cleanups.length = 0
  })

  async function setup(respond?: Receiver['respond'], over: Partial<WebhookDispatcherOptions> = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'pgpt-wh-'))
    const file = join(dir, 'pgpt.db')
    const receiver = await startReceiver(respond)
    const metrics = createMetrics()
    const logs: SqliteDeliveryLog[] = []
    const dispatchers: WebhookDispatcher[] = []
    const make = () => {
      const log = new SqliteDeliveryLog({ file })
      const d = new WebhookDispatcher({
        log,
        secretFor,
        retryScheduleMs: [50, 50],
        jitter: 0.1,
        timeoutMs: 500,
        allowPrivate: true,
        pollIntervalMs: 20,
        logger: silent,
        metrics,
        ...over,
      })
      logs.push(log)
      dispatchers.push(d)
      return { log, d }
    }
    cleanups.push(async () => {
      for (const d of dispatchers) await d.stop()
      for (const l of logs) await l.close()
      await receiver.close()
      rmSync(dir, { recursive: true, force: true })
    })
    return { receiver, metrics, make, file }
  }

  it('delivers filtered events signed so the standardwebhooks library verifies them', async () => {
    const s = await setup()
    const { d } = s.make()
    d.start()
    const target = { url: s.receiver.url, eventsFilter: ['start' as const, 'completed' as const] }
    await d.onJobEvent(job({ webhook: target }), ev('start', 1))
    await d.onJobEvent(job({ webhook: target }), ev('token', 2, { text: 'x' }))
    await d.onJobEvent(job({ webhook: target }), ev('output', 3, { text: 'partial' }))
    const finished = job({
      webhook: target,
      state: 'succeeded',
      output: { text: 'done' },
      finishedAt: 1_700_000_002_000,
    })
    await d.onJobEvent(finished, ev('completed', 4, { text: 'done' }))
    await waitFor(() => s.receiver.received.length >= 2)
    await new Promise((r) => setTimeout(r, 100))
    expect(s.receiver.received).toHaveLength(2)
    const wh = new Webhook(secretFor('tenant_a'))
    const bodies = s.receiver.received.map((r) => wh.verify(r.body, r.headers as Record<string, string>))
    expect(bodies.map((b) => (b as { status: string }).status).sort()).toEqual(['running', 'succeeded'])
    const done = bodies.find((b) => (b as { status: string }).status === 'succeeded')
    expect(done).toEqual({
      id: 'job_abc',
      object: 'job',
      kind: 'generation',
      model: 'prometheus-mini',
      status: 'succeeded',
      output: { text: 'done' },
      error: null,
      attempts: 1,
      cancel_requested: false,
      request_id: 'req_1',
      metadata: null,
      created_at: 1_700_000_000,
      started_at: 1_700_000_001,
      completed_at: 1_700_000_002,
      input: {},
      webhook: s.receiver.url,
      webhook_events_filter: ['start', 'completed'],
      urls: { get: '/v1/jobs/job_abc', cancel: '/v1/jobs/job_abc/cancel', stream: '/v1/jobs/job_abc/stream' },
    })
    // Another tenant's secret does not verify.
    const other = new Webhook(secretFor('tenant_b'))
    expect(() =>
      other.verify(s.receiver.received[0].body, s.receiver.received[0].headers as Record<string, string>),
    ).toThrow()
    expect(s.receiver.received.map((r) => r.headers['pgpt-webhook-event']).sort()).toEqual([
      'completed',
      'start',
    ])
  })

  it('the same event logged twice (a job run twice) is sent once, with one webhook-id', async () => {
    const s = await setup()
    const { d, log } = s.make()
    const target = { url: s.receiver.url, eventsFilter: [] }
    await d.onJobEvent(job({ webhook: target }), ev('start', 1))
    await d.onJobEvent(job({ webhook: target, attempts: 2 }), ev('start', 1))
    d.start()
    await waitFor(() => s.receiver.received.length >= 1)
    await new Promise((r) => setTimeout(r, 100))
    expect(s.receiver.received).toHaveLength(1)
    expect(s.receiver.received[0].headers['webhook-id']).toBe(webhookId('job_abc', 'start'))
    expect(await log.listByJob('job_abc')).toHaveLength(1)
  })

  it('retries a failing receiver with the same webhook-id, and the log survives a dispatcher restart', async () => {
    const s = await setup((n) => (n < 2 ? 500 : 204), { retryScheduleMs: [300, 50] })
    const first = s.make()
    const target = { url: s.receiver.url, eventsFilter: [] }
    await first.d.onJobEvent(
      job({ webhook: target, state: 'failed', error: { code: 'x', message: 'y' } }),
      ev('failed', 2),
    )
    first.d.start()
    await waitFor(() => s.receiver.received.length >= 1)
    // Crash-like stop right after the first failed attempt: only the log remains.
    await first.d.stop()
    const id = webhookId('job_abc', 'completed')
    const row = await first.log.get(id)
    expect(row).toMatchObject({ attempt: 1, status: 'pending', responseCode: 500, lastError: 'HTTP 500' })
    await first.log.close()

    const second = s.make()
    second.d.start()
    await waitFor(async () => (await second.log.get(id))?.status === 'succeeded')
    expect(s.receiver.received).toHaveLength(3)
    expect(new Set(s.receiver.received.map((r) => r.headers['webhook-id']))).toEqual(new Set([id]))
    // Each attempt is signed afresh and verifies.
    const wh = new Webhook(secretFor('tenant_a'))
    for (const r of s.receiver.received)
      expect(() => wh.verify(r.body, r.headers as Record<string, string>)).not.toThrow()
    // The retry waited the schedule's first step (300 ms ± 10 %).
    expect(s.receiver.received[1].at - s.receiver.received[0].at).toBeGreaterThanOrEqual(260)
    expect(await second.log.get(id)).toMatchObject({ attempt: 3, status: 'succeeded', responseCode: 204 })
    const m = await s.metrics.registry.getSingleMetric('pgpt:webhook_deliveries_total')?.get()
    const by = Object.fromEntries((m?.values ?? []).map((v) => [v.labels.outcome, v.value]))
    expect(by).toEqual({ retry: 2, success: 1 })
  })

  it('gives up after the schedule is spent; timeouts and redirects count as failures', async () => {
    const s = await setup((n) => (n === 0 ? 'hang' : 302), { timeoutMs: 200 })
    const { d, log } = s.make()
    await d.onJobEvent(job({ webhook: { url: s.receiver.url, eventsFilter: [] } }), ev('start', 1))
    d.start()
    const id = webhookId('job_abc', 'start')
    const row = await waitFor(async () => {
      const r = await log.get(id)
      return r?.status === 'failed' ? r : null
    }, 5000)
    expect(row).toMatchObject({ attempt: 3, responseCode: 302 })
    expect(row?.lastError).toMatch(/redirects are not followed/)
    expect(s.receiver.received.map((r) => r.path)).toEqual(['/hook', '/hook', '/hook'])
    const m = await s.metrics.registry.getSingleMetric('pgpt:webhook_deliveries_total')?.get()
    expect(m?.values.find((v) => v.labels.outcome === 'failed')?.value).toBe(1)
  })

  it('refuses a private target unless allowPrivate, without sending anything', async () => {
    const s = await setup(() => 200, { allowPrivate: false })
    const { d, log } = s.make()
    await d.onJobEvent(job({ webhook: { url: s.receiver.url, eventsFilter: [] } }), ev('start', 1))
    d.start()
    const id = webhookId('job_abc', 'start')
    const row = await waitFor(async () => {
      const r = await log.get(id)
      return r?.status === 'failed' ? r : null
    })
    expect(row?.attempt).toBe(1)
    expect(row?.lastError).toMatch(/127\.0\.0\.1 \(loopback\)/)
    expect(s.receiver.received).toHaveLength(0)
    const m = await s.metrics.registry.getSingleMetric('pgpt:webhook_deliveries_total')?.get()
    expect(m?.values.find((v) => v.labels.outcome === 'refused')?.value).toBe(1)
  })

  it('prunes finished deliveries past the retention, keeping pending ones', async () => {
    const s = await setup(() => 200, { retentionMs: 50 })
    const { d, log } = s.make()
    const target = { url: s.receiver.url, eventsFilter: [] }
    await d.onJobEvent(job({ webhook: target }), ev('start', 1))
    d.start()
    const id = webhookId('job_abc', 'start')
    await waitFor(async () => (await log.get(id))?.status === 'succeeded')
    await d.stop()
    await log.enqueue(
      {
        id: 'msg_pending',
        jobId: 'job_x',
        requestId: null,
        tenant: 't',
        event: 'start',
        url: 'x',
        payload: '{}',
      },
      Date.now() + 60_000,
    )
    await new Promise((r) => setTimeout(r, 60))
    const second = s.make()
    second.d.start() // prunes on its first idle moment
    await waitFor(async () => (await second.log.get(id)) === null)
    expect(await second.log.get('msg_pending')).not.toBeNull()
  })

  it('connects to the address the guard checked (pinned lookup), never re-resolving the name', async () => {
    let lookups = 0
    const s = await setup(() => 200, {
      resolve: async () => {
        lookups++
        return [{ address: '127.0.0.1', family: 4 }]
      },
    })
    const { d, log } = s.make()
    // No such name in any DNS: only the pinned address can make this connect.
    const url = `http://hooks.pgpt.invalid:${s.receiver.port}/hook`
    await d.onJobEvent(job({ webhook: { url, eventsFilter: [] } }), ev('start', 1))
    d.start()
    await waitFor(async () => (await log.get(webhookId('job_abc', 'start')))?.status === 'succeeded')
    expect(lookups).toBe(1)
    expect(s.receiver.received[0].headers.host).toBe(`hooks.pgpt.invalid:${s.receiver.port}`)
  })
})
