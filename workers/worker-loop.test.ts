import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { openLocalQueue } from '../core/adapters/local-queue.js'
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryJobStore } from '../core/adapters/memory-job-store.js'
import { memoryQueueWithDeadLetter } from '../core/adapters/memory-queue.js'
import { SqliteJobStore } from '../core/adapters/sqlite-job-store.js'
import { createSqsQueue } from '../core/adapters/sqs-queue.js'
import { createLogger } from '../core/logger.js'
import { createMetrics } from '../core/metrics.js'
import type { JobEvent } from '../core/ports/events.js'
import type { JobRecord } from '../core/ports/job-store.js'
import { RecordingQueue } from '../test/helpers/recording-queue.js'
import { handlers as testHandlers } from '../test/helpers/test-handlers.js'
import { type SqsServer, startSqsServer } from '../test/servers/sqs-server.js'
import { drainDeadLetter } from './dead-letter.js'
import { INTERNAL_JOB_ERROR, PermanentError, StoppedEarly } from './errors.js'
import { type JobHandler, type RunWorkerOptions, runWorker } from './worker-loop.js'

async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 5000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<T>
    if (Date.now() > end) throw new Error('waitFor: timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}

type Adapters = 'memory' | 'sqlite' | 'sqs'
const cleanups: Array<() => Promise<void> | void> = []
let sqs: SqsServer | undefined
let sqsQueues = 0

/** The in-memory queue and job store; the real local SQLite ones in a fresh file; or SQS (local-aws-sqs). */
async function adapters(kind: Adapters, maxReceiveCount: number, maxHoldSeconds?: number) {
  if (kind === 'memory')
    return {
      ...memoryQueueWithDeadLetter(2, maxReceiveCount, { maxHoldSeconds }),
      jobs: new MemoryJobStore(),
    }
  if (kind === 'sqs') {
    sqs ??= await startSqsServer()
    const opts = { visibilityTimeoutSeconds: 2, maxReceiveCount, maxHoldSeconds }
    const urls = await sqs.createQueuePair(`loop-${process.pid}-${++sqsQueues}`, opts)
    const pair = createSqsQueue({
      ...urls,
      region: sqs.region,
      endpoint: sqs.endpoint,
      credentials: sqs.credentials,
      ...opts,
    })
    return { ...pair, jobs: new MemoryJobStore() }
  }
  const dir = mkdtempSync(join(tmpdir(), 'pgpt-loop-'))
  const file = join(dir, 'pgpt.db')
  const pair = openLocalQueue({
    file,
    name: 'jobs',
    visibilityTimeoutSeconds: 2,
    maxReceiveCount,
    pollIntervalMs: 10,
    maxHoldSeconds,
  })
  const jobs = new SqliteJobStore({ file })
  cleanups.push(async () => {
    await pair.queue.close?.()
    await jobs.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { ...pair, jobs }
}

async function setupWith(
  kind: Adapters,
  over: Partial<RunWorkerOptions> = {},
  maxReceiveCount = 3,
  maxHoldSeconds?: number,
) {
  const made = await adapters(kind, maxReceiveCount, maxHoldSeconds)
  const queue = new RecordingQueue(made.queue)
  const { deadLetter, jobs } = made
  const events = new MemoryEvents()
  const seen: Array<{ job: JobRecord; event: JobEvent }> = []
  const lines: Array<Record<string, unknown>> = []
  const logger = createLogger({
    service: 'worker',
    level: 'debug',
    destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
  })
  const metrics = createMetrics()
  const ctrl = new AbortController()
  const opts: RunWorkerOptions = {
    queue,
    jobs,
    events,
    handlers: testHandlers,
    signal: ctrl.signal,
    visibilityTimeoutSeconds: 2,
    maxReceiveCount,
    waitTimeSeconds: 1,
    heartbeatIntervalMs: 300,
    cancelPollMs: 50,
    retryBackoff: { base: 0, max: 0 },
    receiveBackoff: { base: 10, max: 50 },
    unhandledDelaySeconds: 0,
    shutdownGraceMs: 2000,
    abortWaitMs: 300,
    statsIntervalMs: 50,
    deadLetter,
    logger,
    metrics,
    onJobEvent: (job, event) => void seen.push({ job, event }),
    abortableReceive: kind !== 'sqs',
    ...over,
  }
  let done: Promise<void> | undefined
  const start = () => {
    done = runWorker(opts)
    return done
  }
  const stop = async () => {
    ctrl.abort()
    await done
  }
  const enqueue = async (kind: string, input: unknown, extra: Partial<JobRecord> = {}) => {
    const job = await jobs.create({ tenant: 't1', kind, input, requestId: `req_${kind}`, ...extra })
    await queue.send(JSON.stringify({ jobId: job.id, kind, requestId: job.requestId }))
    return job
  }
  const empty = async () => {
    const st = await queue.stats()
    return st.visible + st.inFlight + st.delayed === 0
  }
  const settled = (id: string) =>
    waitFor(async () => {
      const j = await jobs.getById(id)
      return j && ['succeeded', 'failed', 'canceled'].includes(j.state) ? j : null
    })
  return {
    queue,
    deadLetter,
    jobs,
    events,
    seen,
    lines,
    metrics,
    opts,
    start,
    stop,
    enqueue,
    settled,
    empty,
  }
}

afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
})
afterAll(async () => {
  await sqs?.stop()
})

describe.each(['memory', 'sqlite', 'sqs'] as const)('runWorker over the %s queue and job store', (kind) => {
  const setup = (over: Partial<RunWorkerOptions> = {}, maxReceiveCount = 3, maxHoldSeconds?: number) =>
    setupWith(kind, over, maxReceiveCount, maxHoldSeconds)

  beforeAll(async () => {
    if (kind === 'sqs') sqs ??= await startSqsServer()
  })

  it('rejects bad options naming the rule', async () => {
    const s = await setup({ concurrency: 0 })
    await expect(runWorker(s.opts)).rejects.toThrow(/concurrency must be an integer >= 1/)
    const t = await setup({ heartbeatIntervalMs: 5000 })
    await expect(runWorker(t.opts)).rejects.toThrow(/heartbeatIntervalMs/)
    const u = await setup({ holdMarginMs: 43_200 * 500 }) // half the queue's 12-hour hold: too much
    await expect(runWorker(u.opts)).rejects.toThrow(/holdMarginMs/)
  })

  it('runs a job to succeeded, publishes ordered events, acks, and logs with requestId and jobId', async () => {
    const s = await setup()
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 30, steps: 2, output: { text: 'hi' } })
    const done = await s.settled(job.id)
    expect(done.state).toBe('succeeded')
    expect(done.output).toEqual({ text: 'hi' })
    expect(done.attempts).toBe(1)
    await waitFor(s.empty)
    const evs = s.seen.filter((x) => x.event.jobId === job.id).map((x) => [x.event.seq, x.event.type])
    expect(evs).toEqual([
      [1, 'start'],
      [2, 'progress'],
      [3, 'progress'],
      [4, 'output'],
      [5, 'completed'],
    ])
    expect(s.seen.at(-1)?.job.state).toBe('succeeded')
    await s.stop()
    const jobLines = s.lines.filter((l) => l.jobId === job.id)
    expect(jobLines.length).toBeGreaterThan(1)
    for (const l of jobLines) expect(l.requestId).toBe('req_test.sleep')
    const metrics = await s.metrics.registry.getMetricsAsJSON()
    const jobsMetric = metrics.find((m) => m.name === 'pgpt:jobs_total')
    expect(jobsMetric?.values).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ labels: { kind: 'test.sleep', state: 'succeeded' }, value: 1 }),
      ]),
    )
    const depth = metrics.find((m) => m.name === 'pgpt:queue_depth')
    expect(depth?.values.some((v) => v.labels.queue === s.queue.name)).toBe(true)
  })

  it('acks a message whose job is already terminal without running it', async () => {
    let ran = false
    const s = await setup({ handlers: { x: async () => (ran = true) } })
    const job = await s.enqueue('x', {})
    await s.jobs.transition(job.id, 'canceled')
    s.start()
    await waitFor(s.empty)
    await s.stop()
    expect(ran).toBe(false)
    expect((await s.jobs.getById(job.id))?.state).toBe('canceled')
    // The hook still hears of the terminal state (the `completed` webhook of a job canceled while queued).
    expect(s.seen.map((x) => [x.job.state, x.event.type])).toEqual([['canceled', 'canceled']])
    expect(
      await s.events
        .subscribe(job.id, { signal: AbortSignal.timeout(50) })
        [Symbol.asyncIterator]()
        .next(),
    ).toEqual({
      done: true,
      value: undefined,
    })
  })

  it('fails a job at once on a permanent error, keeping the reason', async () => {
    const s = await setup()
    s.start()
    const job = await s.enqueue('test.fail', { permanent: true, message: 'bad model' })
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('failed')
    expect(done.error).toEqual({ message: 'bad model', code: 'test_permanent' })
    expect(done.attempts).toBe(1)
    expect(await s.empty()).toBe(true)
    expect(s.seen.find((x) => x.event.type === 'failed')?.event.data).toEqual(done.error)
  })

  it('treats input validation errors as permanent', async () => {
    const s = await setup()
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 'soon' })
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('failed')
    expect(done.error?.code).toBe('invalid_input')
    expect(done.error?.message).toMatch(/ms/)
  })

  it('retries transient errors with backoff through the queue, then succeeds', async () => {
    const s = await setup({ retryBackoff: { base: 1, max: 1 } }, 5)
    s.start()
    const t0 = Date.now()
    const job = await s.enqueue('test.fail', { times: 2 })
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('succeeded')
    expect(done.attempts).toBe(3)
    // Two backoffs of ceil(0.5..1 s) = 1 s each, applied as visibility extensions.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900)
    expect(s.queue.calls.extend.filter(([, sec]) => sec === 1).length).toBeGreaterThanOrEqual(2)
  })

  it('on the last delivery fails a transiently failing job with its reason kept', async () => {
    const s = await setup({}, 3)
    s.start()
    const job = await s.enqueue('test.fail', { message: 'GPU out of memory' })
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('failed')
    expect(done.attempts).toBe(3)
    expect(done.error).toEqual({
      code: 'test_transient',
      message: 'GPU out of memory (gave up after 3 deliveries)',
    })
    expect(await s.empty()).toBe(true)
  })

  it('cancels a running job when cancel is requested', async () => {
    const s = await setup()
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 5000, steps: 50 })
    await waitFor(async () => (await s.jobs.getById(job.id))?.state === 'running')
    const t0 = Date.now()
    await s.jobs.requestCancel('t1', job.id)
    const done = await s.settled(job.id)
    expect(Date.now() - t0).toBeLessThan(1000)
    await s.stop()
    expect(done.state).toBe('canceled')
    expect(await s.empty()).toBe(true)
    expect(s.seen.at(-1)?.event.type).toBe('canceled')
  })

  it.each([
    ['finishes', false],
    ['fails transiently', true],
  ])(
    'a run another worker took over %s: its outcome is dropped, the record and message left to the new run',
    async (_, fails) => {
      let takenOver: () => void = () => {}
      const tookOver = new Promise<void>((r) => (takenOver = r))
      const s = await setup({
        // The cancel watch would also notice the takeover (as a lost lease); here the outcome meets the fence.
        cancelPollMs: 60_000,
        handlers: {
          overtaken: async ({ job, publish }) => {
            // Meanwhile this worker's lease lapsed and another worker claimed the job (run 2).
            await s.jobs.transition(job.id, 'queued', { run: job.attempts })
            await s.jobs.transition(job.id, 'running', { run: job.attempts })
            takenOver()
            await publish('progress', { late: true })
            if (fails) throw new Error('late failure')
            return { late: true }
          },
        },
      })
      s.start()
      const job = await s.enqueue('overtaken', {})
      await tookOver
      await waitFor(() =>
        s.lines.some((l) => l.msg === 'job taken over by another run; dropping this outcome'),
      )
      await s.stop()
      // Run 2's: still running, no result of run 1's; run 1 neither acked nor released its message.
      expect(await s.jobs.getById(job.id)).toMatchObject({ state: 'running', attempts: 2 })
      expect((await s.jobs.getById(job.id))?.output).toBeUndefined()
      expect(s.queue.calls.ack).toEqual([])
      expect(s.queue.calls.release).toEqual([])
      expect(s.seen.map((x) => [x.event.run, x.event.type])).toEqual([
        [1, 'start'],
        [1, 'progress'],
      ])
    },
  )

  it('the cancel watch stops a run another worker took over, as a lost lease', async () => {
    let reason: unknown
    const s = await setup({
      handlers: {
        overtaken: async ({ job, signal }) => {
          await s.jobs.transition(job.id, 'queued', { run: job.attempts })
          await s.jobs.transition(job.id, 'running', { run: job.attempts })
          await new Promise((r) => signal.addEventListener('abort', r, { once: true }))
          reason = signal.reason
          throw signal.reason
        },
      },
    })
    s.start()
    const job = await s.enqueue('overtaken', {})
    await waitFor(() =>
      s.lines.some((l) => l.msg === 'lease lost; leaving the job to whoever holds its message now'),
    )
    await s.stop()
    expect(reason).toMatchObject({ kind: 'lease_lost' })
    expect(await s.jobs.getById(job.id)).toMatchObject({ state: 'running', attempts: 2 })
    expect(s.queue.calls.ack).toEqual([])
  })

  it('a canceled job keeps what its handler produced before it stopped (StoppedEarly)', async () => {
    const s = await setup({
      handlers: {
        partial: async ({ signal }) => {
          let steps = 0
          while (!signal.aborted) {
            steps++
            await new Promise((r) => setTimeout(r, 10))
          }
          throw new StoppedEarly({ steps }, { cause: signal.reason })
        },
      },
    })
    s.start()
    const job = await s.enqueue('partial', {})
    await waitFor(async () => (await s.jobs.getById(job.id))?.state === 'running')
    await s.jobs.requestCancel('t1', job.id)
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('canceled')
    const kept = done.output as { steps: number }
    expect(kept.steps).toBeGreaterThan(0)
    // The `canceled` event carries it too (the edge meters a generation by it).
    expect(s.seen.at(-1)?.event).toMatchObject({ type: 'canceled', data: kept })
    expect(await s.empty()).toBe(true)
  })

  it('keeps a long job invisible with heartbeats (no duplicate run)', async () => {
    let runs = 0
    const s = await setup({ visibilityTimeoutSeconds: 1, heartbeatIntervalMs: 200, concurrency: 2 })
    s.opts.handlers = {
      slow: async (ctx) => {
        runs++
        return testHandlers['test.sleep']({ ...ctx, job: { ...ctx.job, input: { ms: 2500 } } })
      },
    }
    s.start()
    const job = await s.enqueue('slow', {})
    const done = await waitFor(
      async () => ((await s.jobs.getById(job.id))?.state === 'succeeded' ? true : null),
      8000,
    )
    await s.stop()
    expect(done).toBe(true)
    expect(runs).toBe(1)
    expect(s.queue.calls.extend.length).toBeGreaterThanOrEqual(8)
  })

  it('a job longer than the hold cap is given back before it, sent again and resumed until it succeeds', async () => {
    // A 6 s job on a queue that holds a delivery 3 s at most (SQS: 12 h): each run is stopped
    // holdMarginMs (default 3 heartbeats + abortWaitMs, here at most a quarter of the cap) before the cap.
    const STEPS = 24
    const checkpoint = new Map<string, number>()
    const runs: Array<{ receiveCount: number; from: number; attempt: number }> = []
    const long: JobHandler = async (ctx) => {
      let done = checkpoint.get(ctx.job.id) ?? 0
      runs.push({ receiveCount: ctx.receiveCount, from: done, attempt: ctx.job.attempts })
      while (done < STEPS) {
        if (ctx.signal.aborted) throw ctx.signal.reason
        await new Promise((r) => setTimeout(r, 250))
        checkpoint.set(ctx.job.id, ++done)
      }
      return { steps: done }
    }
    // maxReceiveCount 2: releasing the message at each cap would dead-letter the job on its third run.
    const s = await setup({ heartbeatIntervalMs: 250, abortWaitMs: 300, handlers: { long } }, 2, 3)
    s.start()
    const job = await s.enqueue('long', {})
    const done = await waitFor(async () => {
      const j = await s.jobs.getById(job.id)
      return j && ['succeeded', 'failed', 'canceled'].includes(j.state) ? j : null
    }, 20_000)
    await s.stop()
    expect(done).toMatchObject({ state: 'succeeded', output: { steps: STEPS } })
    expect(runs.length).toBeGreaterThanOrEqual(3)
    // Every run came from a fresh message, resumed where the last one stopped, and counted as an attempt.
    expect(runs.map((r) => r.receiveCount)).toEqual(runs.map(() => 1))
    for (let i = 1; i < runs.length; i++) expect(runs[i]!.from).toBeGreaterThan(runs[i - 1]!.from)
    expect(runs.map((r) => r.attempt)).toEqual(runs.map((_, i) => i + 1))
    expect(done.attempts).toBe(runs.length)
    expect(
      s.lines.filter((l) => l.msg === "job given back before the queue's hold cap; sent again to resume"),
    ).toHaveLength(runs.length - 1)
    expect(s.lines.filter((l) => l.msg === 'heartbeat failed')).toEqual([])
    expect(await s.deadLetter.receive({ waitTimeSeconds: 1 })).toEqual([])
    await waitFor(() => s.empty(), 3000)
  }, 30_000)

  it('never runs more than `concurrency` jobs at once', async () => {
    let now = 0
    let peak = 0
    const handler: JobHandler = async () => {
      now++
      peak = Math.max(peak, now)
      await new Promise((r) => setTimeout(r, 80))
      now--
    }
    const s = await setup({ concurrency: 3, handlers: { c: handler } })
    s.start()
    const ids = await Promise.all(Array.from({ length: 10 }, () => s.enqueue('c', {})))
    for (const j of ids) await s.settled(j.id)
    await s.stop()
    expect(peak).toBe(3)
  })

  it('backs off and keeps going when receive fails', async () => {
    const s = await setup()
    s.queue.failReceives = 3
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 1 })
    expect((await s.settled(job.id)).state).toBe('succeeded')
    await s.stop()
    expect(s.lines.filter((l) => l.msg === 'receive failed; backing off').length).toBe(3)
  })

  it('on shutdown lets a short job finish within the grace period', async () => {
    const s = await setup({ shutdownGraceMs: 2000 })
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 400 })
    await waitFor(async () => (await s.jobs.getById(job.id))?.state === 'running')
    await s.stop()
    expect((await s.jobs.getById(job.id))?.state).toBe('succeeded')
    expect(await s.empty()).toBe(true)
  })

  it('on shutdown past the grace period aborts, requeues the job and releases its message', async () => {
    const s = await setup({ shutdownGraceMs: 200 })
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 10_000, steps: 100 })
    await waitFor(async () => (await s.jobs.getById(job.id))?.state === 'running')
    const t0 = Date.now()
    await s.stop()
    expect(Date.now() - t0).toBeLessThan(1500)
    const rec = await s.jobs.getById(job.id)
    expect(rec?.state).toBe('queued')
    // Once by the job; on SQS maybe again by the last long poll, which got the message back and released it.
    expect(s.queue.calls.release.length).toBeGreaterThanOrEqual(1)
    // Stats are approximate on SQS: wait for them.
    await waitFor(async () => (await s.queue.stats()).visible === 1, 1000)
  })

  it('keeps the grace deadline when every slot is busy', async () => {
    const s = await setup({ shutdownGraceMs: 200, concurrency: 1 })
    s.start()
    const a = await s.enqueue('test.sleep', { ms: 10_000, steps: 100 })
    const b = await s.enqueue('test.sleep', { ms: 10_000, steps: 100 })
    await waitFor(async () => (await s.jobs.getById(a.id))?.state === 'running')
    const t0 = Date.now()
    await s.stop()
    expect(Date.now() - t0).toBeLessThan(2000)
    expect((await s.jobs.getById(a.id))?.state).toBe('queued')
    expect((await s.jobs.getById(b.id))?.state).toBe('queued')
    await waitFor(async () => (await s.queue.stats()).visible === 2, 1000)
  })

  it('releases even when the handler ignores its abort signal (after abortWaitMs)', async () => {
    const s = await setup({ shutdownGraceMs: 100, abortWaitMs: 200 })
    s.start()
    const job = await s.enqueue('test.sleep', { ms: 5000, ignoreAbort: true })
    await waitFor(async () => (await s.jobs.getById(job.id))?.state === 'running')
    const t0 = Date.now()
    await s.stop()
    expect(Date.now() - t0).toBeLessThan(1000)
    expect((await s.jobs.getById(job.id))?.state).toBe('queued')
    // Stats are approximate on SQS: wait for them.
    await waitFor(async () => (await s.queue.stats()).visible === 1, 1000)
  })

  it('takes over a job left running by a crashed worker', async () => {
    const s = await setup()
    const job = await s.enqueue('test.sleep', { ms: 1 })
    await s.jobs.transition(job.id, 'running') // the "crashed" worker's claim
    s.start()
    const done = await s.settled(job.id)
    await s.stop()
    expect(done.state).toBe('succeeded')
    expect(done.attempts).toBe(2)
  })

  it('returns messages it cannot handle; they dead-letter and the drain marks the job failed', async () => {
    const s = await setup({}, 2)
    s.start()
    const job = await s.enqueue('no.such.kind', {})
    await s.queue.send('{not json')
    await waitFor(async () => (await s.deadLetter.stats()).visible === 2)
    await s.stop()
    expect((await s.jobs.getById(job.id))?.state).toBe('queued')
    const result = await drainDeadLetter({
      deadLetter: s.deadLetter,
      jobs: s.jobs,
      events: s.events,
      maxReceiveCount: 2,
      logger: createLogger({ service: 't', level: 'silent' }),
    })
    expect(result).toEqual({ failed: [job.id], alreadyFinished: 0, dropped: 1 })
    const failed = await s.jobs.getById(job.id)
    expect(failed?.state).toBe('failed')
    expect(failed?.error).toEqual({ code: 'dead_lettered', message: 'dead-lettered after 2 deliveries' })
    expect((await s.deadLetter.stats()).visible).toBe(0)
  })

  it('a handler error that is not typed is retried (transient) and PermanentError is not', async () => {
    let plain = 0
    let perm = 0
    const s = await setup(
      {
        handlers: {
          plain: async () => {
            plain++
            throw new Error('boom')
          },
          perm: async () => {
            perm++
            throw new PermanentError('nope')
          },
        },
      },
      2,
    )
    s.start()
    const a = await s.enqueue('plain', {})
    const b = await s.enqueue('perm', {})
    const [da, db] = [await s.settled(a.id), await s.settled(b.id)]
    await s.stop()
    expect([plain, perm]).toEqual([2, 1])
    expect(da.error).toEqual({
      code: 'internal_error',
      message: `${INTERNAL_JOB_ERROR} (gave up after 2 deliveries)`,
    })
    expect(db.error).toEqual({ code: 'job_failed', message: 'nope' })
  })
})
