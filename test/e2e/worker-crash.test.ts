/**
 * End to end over real worker processes and the real local SQLite queue:
 * a worker killed with SIGKILL mid-job → the job completes on another worker
 * after the visibility timeout, and the webhook receiver sees one webhook-id
 * per event; a job that crashes every worker it meets (a poison job) lands in
 * the dead-letter queue and then reads as failed with the reason.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createLogger } from '../../core/logger.js'
import { drainDeadLetter } from '../../workers/dead-letter.js'
import { startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'

describe('worker process: crashes', () => {
  let h: Harness | undefined
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.splice(0)) await c()
    await h?.cleanup()
    h = undefined
  })

  it('a job whose worker is SIGKILLed mid-run completes on another worker after the visibility timeout', async () => {
    h = createHarness({ PGPT_VISIBILITY_TIMEOUT_S: '5' })
    const receiver = await startReceiver()
    closers.push(receiver.close)
    const a = h.spawnWorker()
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 1500, steps: 15 },
      requestId: 'req_crash',
      webhook: { url: receiver.url, eventsFilter: [] },
    })
    await a.waitForLog((l) => l.msg === 'job started' && l.jobId === job.id)
    // Let the start webhook go out, then kill the worker mid-job.
    await waitFor(() => receiver.received.length >= 1, 10_000, 'start webhook')
    a.kill('SIGKILL')
    const killedAt = Date.now()
    expect((await a.exited).signal).toBe('SIGKILL')
    expect((await h.jobs.getById(job.id))?.state).toBe('running')

    const b = h.spawnWorker()
    const done = await h.settled(job.id, 30_000)
    expect(done.state).toBe('succeeded')
    expect(done.attempts).toBe(2)
    expect((done.output as { pid: number }).pid).toBe(b.proc.pid)
    // Not before A's last heartbeat's visibility ran out (heartbeat every 5/3 s, so at least ~3.3 s after the kill).
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3000)
    await b.waitForLog(
      (l) => l.msg === 'job was left running by a worker that lost it; taking over' && l.jobId === job.id,
    )
    // Acked right after the terminal transition.
    await waitFor(
      async () => {
        const st = await h!.queues.queue.stats()
        return st.visible + st.inFlight === 0
      },
      5000,
      'the message to be acked',
    )

    await waitFor(
      () => receiver.received.some((r) => r.headers['pgpt-webhook-event'] === 'completed'),
      10_000,
      'completed webhook',
    )
    await new Promise((r) => setTimeout(r, 500))
    const idsByEvent = new Map<string, Set<string>>()
    for (const r of receiver.received) {
      const ev = String(r.headers['pgpt-webhook-event'])
      idsByEvent.set(ev, (idsByEvent.get(ev) ?? new Set()).add(String(r.headers['webhook-id'])))
    }
    // One webhook-id per event, though the job started twice.
    expect([...idsByEvent.keys()].sort()).toEqual(['completed', 'output', 'start'])
    for (const ids of idsByEvent.values()) expect(ids.size).toBe(1)
    expect(receiver.received.filter((r) => r.headers['pgpt-webhook-event'] === 'start')).toHaveLength(1)
    b.kill('SIGTERM')
    expect((await b.exited).code).toBe(0)
  })

  it('a poison job (crashes its worker every time) is dead-lettered and then reads as failed with a reason', async () => {
    h = createHarness({
      PGPT_MAX_RECEIVE_COUNT: '1',
      PGPT_VISIBILITY_TIMEOUT_S: '5',
      PGPT_DEAD_LETTER_INTERVAL_S: '0',
    })
    const a = h.spawnWorker()
    const job = await h.enqueue({ tenant: 'acme', kind: 'test.crash', input: {}, requestId: 'req_poison' })
    expect((await a.exited).signal).toBe('SIGKILL')
    // The next receive after the visibility timeout moves it to the dead-letter queue instead of delivering it.
    const b = h.spawnWorker()
    await waitFor(
      async () => (await h!.queues.deadLetter.stats()).visible === 1,
      20_000,
      'message in the DLQ',
    )
    expect(b.proc.exitCode).toBeNull() // b never ran it
    expect((await h.queues.queue.stats()).visible + (await h.queues.queue.stats()).inFlight).toBe(0)
    expect((await h.jobs.getById(job.id))?.state).toBe('running')
    b.kill('SIGTERM')
    await b.exited

    // The drain (what the worker's periodic task and the Lambda DLQ handler run) marks it failed.
    const result = await drainDeadLetter({
      deadLetter: h.queues.deadLetter,
      jobs: h.jobs,
      maxReceiveCount: 1,
      logger: createLogger({ service: 'test', level: 'silent' }),
    })
    expect(result.failed).toEqual([job.id])
    const failed = await h.jobs.getById(job.id)
    expect(failed?.state).toBe('failed')
    expect(failed?.error).toEqual({ code: 'dead_lettered', message: 'dead-lettered after 1 delivery' })
    expect((await h.queues.deadLetter.stats()).visible).toBe(0)
  })

  it("the worker's periodic dead-letter task fails dead-lettered jobs by itself", async () => {
    h = createHarness({
      PGPT_MAX_RECEIVE_COUNT: '2',
      PGPT_DEAD_LETTER_INTERVAL_S: '1',
      PGPT_WORKER_UNHANDLED_DELAY_S: '1',
    })
    const receiver = await startReceiver()
    closers.push(receiver.close)
    const w = h.spawnWorker()
    // A kind no worker runs: returned twice, then dead-lettered by the queue, then failed by the drain.
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'fine_tune',
      input: {},
      requestId: 'req_nokind',
      webhook: { url: receiver.url, eventsFilter: ['completed'] },
    })
    const done = await h.settled(job.id, 30_000)
    expect(done.state).toBe('failed')
    expect(done.error).toEqual({ code: 'dead_lettered', message: 'dead-lettered after 2 deliveries' })
    await w.waitForLog(
      (l) =>
        l.msg === 'job dead-lettered; marked failed' && l.jobId === job.id && l.requestId === 'req_nokind',
    )
    await waitFor(() => receiver.received.length >= 1, 10_000, 'completed webhook')
    expect(JSON.parse(receiver.received[0].body)).toMatchObject({
      id: job.id,
      status: 'failed',
      error: done.error,
    })
    w.kill('SIGTERM')
    expect((await w.exited).code).toBe(0)
  })
})
