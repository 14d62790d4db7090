/**
 * End to end over real worker processes and the real local SQLite queue:
 * SIGTERM mid-job either lets the job finish within PGPT_SHUTDOWN_GRACE_S, or
 * past it puts the job back to `queued` and releases its message, so another
 * worker takes it at once (not after the visibility timeout).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'

describe('worker process: SIGTERM', () => {
  let h: Harness | undefined
  afterEach(async () => {
    await h?.cleanup()
    h = undefined
  })

  it('finishes an in-flight job that fits in the grace period, then exits 0', async () => {
    h = createHarness({ PGPT_SHUTDOWN_GRACE_S: '10' })
    const w = h.spawnWorker({ PGPT_WORKER_METRICS_PORT: '0' })
    const listening = await w.waitForLog((l) => l.msg === 'worker /metrics and /health listening')
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 1500, steps: 10 },
      requestId: 'req_t1',
    })
    await w.waitForLog((l) => l.msg === 'job started' && l.jobId === job.id)
    const t0 = Date.now()
    w.kill('SIGTERM')
    // While draining, /health says so (503) and no new job is taken.
    await waitFor(
      async () =>
        (await fetch(`http://127.0.0.1:${listening.port}/health`).catch(() => null))?.status === 503,
      3000,
      'health 503',
    )
    const late = await h.enqueue({ tenant: 'acme', kind: 'test.sleep', input: { ms: 1 } })
    const { code } = await w.exited
    expect(code).toBe(0)
    expect(Date.now() - t0).toBeLessThan(5000)
    const done = await h.jobs.getById(job.id)
    expect(done?.state).toBe('succeeded')
    expect((await h.jobs.getById(late.id))?.state).toBe('queued')
    expect((await h.queues.queue.stats()).visible).toBe(1)
    // Every line about the job carries its requestId and jobId.
    const lines = w.logs.filter((l) => l.jobId === job.id)
    expect(lines.length).toBeGreaterThanOrEqual(2)
    for (const l of lines) expect(l.requestId).toBe('req_t1')
  })

  it('past the grace period requeues the job and releases its message; another worker takes it at once', async () => {
    h = createHarness({ PGPT_SHUTDOWN_GRACE_S: '1', PGPT_VISIBILITY_TIMEOUT_S: '30' })
    const a = h.spawnWorker()
    const job = await h.enqueue({ tenant: 'acme', kind: 'test.sleep', input: { ms: 3000, steps: 30 } })
    await a.waitForLog((l) => l.msg === 'job started' && l.jobId === job.id)
    const t0 = Date.now()
    a.kill('SIGTERM')
    const { code } = await a.exited
    const stopped = Date.now() - t0
    expect(code).toBe(0)
    expect(stopped).toBeGreaterThanOrEqual(900)
    expect(stopped).toBeLessThan(4000)
    await a.waitForLog(
      (l) => l.msg === 'job released for another worker (shutdown)' && l.jobId === job.id,
      1000,
    )
    const requeued = await h.jobs.getById(job.id)
    expect(requeued?.state).toBe('queued')
    expect(requeued?.attempts).toBe(1)
    // Released, not waiting out the 30 s visibility timeout.
    expect((await h.queues.queue.stats()).visible).toBe(1)

    const b = h.spawnWorker()
    const done = await h.settled(job.id, 15_000)
    expect(done.state).toBe('succeeded')
    expect(done.attempts).toBe(2)
    expect((done.output as { pid: number }).pid).toBe(b.proc.pid)
    expect(Date.now() - t0).toBeLessThan(15_000) // far less than 30 s visibility + 3 s
    b.kill('SIGTERM')
    expect((await b.exited).code).toBe(0)
  })
})
