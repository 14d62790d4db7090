/**
 * End to end over a real worker process and the real local SQLite queue: a job
 * with a webhook reaches a real node:http receiver, signed so the
 * standardwebhooks library verifies it; the job's events reach the edge's
 * internal events route (a stand-in server checking the bearer); a receiver
 * that fails is retried with the same webhook-id until it accepts; /health and
 * /metrics answer.
 */
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import { afterEach, describe, expect, it } from 'vitest'
import { SqliteDeliveryLog } from '../../core/adapters/sqlite-delivery-log.js'
import type { JobEvent } from '../../core/ports/events.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'e2e-internal-token-0123456789'

async function startEdgeStandIn(): Promise<{
  url: string
  events: JobEvent[]
  auths: string[]
  close(): Promise<void>
}> {
  const events: JobEvent[] = []
  const auths: string[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      auths.push(req.headers.authorization ?? '')
      if (req.url !== '/internal/events' || req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.statusCode = 401
        return res.end()
      }
      events.push(...(JSON.parse(Buffer.concat(chunks).toString('utf8')) as JobEvent[]))
      res.end('{}')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    events,
    auths,
    close: () => new Promise((r) => server.close(() => r())),
  }
}

describe('worker process: webhooks and events', () => {
  let h: Harness | undefined
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.splice(0)) await c()
    await h?.cleanup()
    h = undefined
  })

  it('delivers signed webhooks for start and completed, and pushes events to the edge', async () => {
    h = createHarness()
    const receiver = await startReceiver()
    const edge = await startEdgeStandIn()
    closers.push(receiver.close, edge.close)
    const worker = h.spawnWorker({
      PGPT_EDGE_URL: edge.url,
      PGPT_INTERNAL_TOKEN: TOKEN,
      PGPT_WORKER_METRICS_PORT: '0',
    })
    const listening = await worker.waitForLog((l) => l.msg === 'worker /metrics and /health listening')
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 200, steps: 2, output: { text: 'hello' } },
      requestId: 'req_e2e_1',
      webhook: { url: receiver.url, eventsFilter: ['start', 'completed'] },
    })
    const done = await h.settled(job.id)
    expect(done.state).toBe('succeeded')
    expect(done.output).toEqual({ text: 'hello' })

    await waitFor(() => receiver.received.length >= 2, 10_000, 'two webhooks')
    // The local profile created the signing key in the data folder; the tenant's secret derives from it.
    const key = readFileSync(join(h.dir, 'webhook-signing-key'), 'utf8').trim()
    const wh = new Webhook(tenantWebhookSecret(key, 'acme'))
    const bodies = receiver.received.map((r) => ({
      event: r.headers['pgpt-webhook-event'],
      id: r.headers['webhook-id'],
      body: wh.verify(r.body, r.headers as Record<string, string>) as Record<string, unknown>,
    }))
    const byEvent = Object.fromEntries(bodies.map((b) => [b.event, b]))
    expect(Object.keys(byEvent).sort()).toEqual(['completed', 'start'])
    expect(byEvent.start.body).toMatchObject({ id: job.id, object: 'job', status: 'running', output: null })
    expect(byEvent.completed.body).toMatchObject({
      id: job.id,
      object: 'job',
      status: 'succeeded',
      output: { text: 'hello' },
      error: null,
      request_id: 'req_e2e_1',
    })
    expect(byEvent.start.id).not.toBe(byEvent.completed.id)
    // A wrong tenant's secret does not verify.
    expect(() =>
      new Webhook(tenantWebhookSecret(key, 'other')).verify(
        receiver.received[0].body,
        receiver.received[0].headers as Record<string, string>,
      ),
    ).toThrow()

    // Events reached the edge's internal route with the bearer, in seq order.
    await waitFor(() => edge.events.some((e) => e.type === 'completed'), 5000, 'completed event at the edge')
    const mine = edge.events.filter((e) => e.jobId === job.id)
    expect(mine.map((e) => e.type)).toEqual(['start', 'progress', 'progress', 'output', 'completed'])
    expect(mine.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
    expect(new Set(edge.auths)).toEqual(new Set([`Bearer ${TOKEN}`]))

    // Health and metrics.
    const base = `http://127.0.0.1:${listening.port}`
    const health = await fetch(`${base}/health`)
    expect(health.status).toBe(200)
    await waitFor(
      async () => {
        const text = await (await fetch(`${base}/metrics`)).text()
        return /pgpt:webhook_deliveries_total\{outcome="success"\} 2/.test(text) ? text : null
      },
      5000,
      'webhook metrics',
    )
    const metrics = await (await fetch(`${base}/metrics`)).text()
    expect(metrics).toMatch(/pgpt:jobs_total\{kind="test.sleep",state="succeeded"\} 1/)
    expect(metrics).toMatch(/pgpt:queue_depth\{queue="generation",state="visible"\}/)

    worker.kill('SIGTERM')
    expect((await worker.exited).code).toBe(0)
  })

  it('retries a failing receiver with the same webhook-id; the delivery survives a worker restart', async () => {
    h = createHarness({
      PGPT_WEBHOOK_RETRY_SCHEDULE_MS: '1500,200,200',
      PGPT_WEBHOOK_SIGNING_KEY: 'k'.repeat(40),
    })
    let failing = true
    const receiver: Receiver = await startReceiver(() => (failing ? 503 : 200))
    closers.push(receiver.close)
    const first = h.spawnWorker()
    await first.waitForLog((l) => l.msg === 'worker started')
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 10 },
      webhook: { url: receiver.url, eventsFilter: ['completed'] },
    })
    await h.settled(job.id)
    await waitFor(() => receiver.received.length >= 1, 10_000, 'first attempt')
    const log = new SqliteDeliveryLog({ file: h.dbFile })
    closers.push(() => log.close())
    await waitFor(async () => (await log.listByJob(job.id))[0]?.attempt === 1, 5000, 'first attempt logged')
    // Stop the worker before the retry is due: only the durable log knows about it now.
    first.kill('SIGKILL')
    await first.exited
    const [row] = await log.listByJob(job.id)
    expect(row).toMatchObject({ status: 'pending', attempt: 1, responseCode: 503, event: 'completed' })

    failing = false
    const second = h.spawnWorker()
    await waitFor(async () => (await log.get(row.id))?.status === 'succeeded', 15_000, 'delivery to succeed')
    expect(receiver.received).toHaveLength(2)
    expect(receiver.received.map((r) => r.headers['webhook-id'])).toEqual([row.id, row.id])
    const wh = new Webhook(tenantWebhookSecret('k'.repeat(40), 'acme'))
    for (const r of receiver.received) {
      const body = wh.verify(r.body, r.headers as Record<string, string>) as { id: string; status: string }
      expect(body).toMatchObject({ id: job.id, status: 'succeeded' })
    }
    expect(await log.get(row.id)).toMatchObject({ attempt: 2, responseCode: 200 })
    second.kill('SIGTERM')
    expect((await second.exited).code).toBe(0)
  })
})
