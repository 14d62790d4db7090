/**
 * The worker meters the generation jobs it runs (workers/generation/usage.ts,
 * wired into the worker loop's terminal transition): the real worker loop,
 * queue, job store and SQLite usage store; only the model is a stand-in (a
 * handler that "generates" one token per prompt word).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryEvents } from '../../core/adapters/memory-events.js'
import { MemoryJobStore } from '../../core/adapters/memory-job-store.js'
import { memoryQueueWithDeadLetter } from '../../core/adapters/memory-queue.js'
import { SqliteUsageStore } from '../../core/adapters/sqlite-usage-store.js'
import { silentLogger } from '../../core/logger.js'
import type { JobRecord, JobState, TransitionPatch } from '../../core/ports/job-store.js'
import type { UsageRecord } from '../../core/ports/usage-store.js'
import type { CanceledGeneration, GenerationOutput } from '../../core/protocol.js'
import { PermanentError, StoppedEarly } from '../errors.js'
import { type JobHandler, runWorker } from '../worker-loop.js'
import { generationMeter, jobUsageId } from './usage.js'

/** A job store that fails the next `succeeded` transitions, as a store outage (or a crash) would. */
class FlakyJobStore extends MemoryJobStore {
  failSucceeded = 0
  override async transition(id: string, to: JobState, patch?: TransitionPatch): Promise<JobRecord> {
    if (to === 'succeeded' && this.failSucceeded > 0) {
      this.failSucceeded--
      throw new Error('job store unreachable')
    }
    return super.transition(id, to, patch)
  }
}

const words = (job: JobRecord) => String((job.input as { prompt: string }).prompt).split(' ')

/** The stand-in model: one token per prompt word; `slow` words take 20 ms each (so a cancel lands mid-way). */
const generation: JobHandler = async ({ job, signal }) => {
  const input = job.input as { slow?: boolean; fail?: boolean }
  if (input.fail) throw new PermanentError('it failed after generating', { code: 'bad_input' })
  const out: string[] = []
  for (const w of words(job)) {
    if (signal.aborted) {
      const partial: CanceledGeneration = {
        model: 'stand-in',
        choices: [{ index: 0, text: out.join(' '), finishReason: null, logprobs: null }],
        usage: { promptTokens: words(job).length, completionTokens: out.length },
      }
      throw new StoppedEarly(partial, { cause: signal.reason })
    }
    out.push(w)
    if (input.slow) await new Promise((r) => setTimeout(r, 20))
  }
  const output: GenerationOutput = {
    model: 'stand-in',
    choices: [{ index: 0, text: out.join(' '), finishReason: 'stop', logprobs: null }],
    usage: { promptTokens: out.length, completionTokens: out.length },
  }
  return output
}

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'pgpt-usage-'))
  const usage = new SqliteUsageStore({ file: join(dir, 'pgpt.db') })
  const { queue } = memoryQueueWithDeadLetter(1, 5)
  const jobs = new FlakyJobStore()
  const meter = generationMeter(usage)
  /** Each record written, with the state its job had then. */
  const writes: Array<{ rec: UsageRecord; state?: JobState }> = []
  const record = usage.record.bind(usage)
  usage.record = async (rec) => {
    const jobId = rec.id?.replace(/^usage_/, '') ?? ''
    writes.push({ rec, state: (await jobs.getById(jobId))?.state })
    return record(rec)
  }
  let runs = 0
  const ctrl = new AbortController()
  const done = runWorker({
    queue,
    jobs,
    events: new MemoryEvents(),
    handlers: {
      generation: async (ctx) => {
        runs++
        return generation(ctx)
      },
      other: async () => ({ model: 'x', usage: { promptTokens: 1, completionTokens: 1 } }),
    },
    signal: ctrl.signal,
    visibilityTimeoutSeconds: 1,
    maxReceiveCount: 5,
    waitTimeSeconds: 1,
    abortableReceive: true,
    cancelPollMs: 20,
    retryBackoff: { base: 0, max: 0 },
    abortWaitMs: 300,
    statsIntervalMs: 0,
    logger: silentLogger,
    meter,
  })
  cleanups.push(async () => {
    ctrl.abort()
    await done
    await usage.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const enqueue = async (input: Record<string, unknown>, kind = 'generation') => {
    const job = await jobs.create({
      tenant: 't1',
      kind,
      input: { endpoint: 'completions', ...input },
      model: 'tiny-7',
      apiKeyId: 'key_1',
      requestId: 'req_1',
    })
    await queue.send(JSON.stringify({ jobId: job.id, kind, requestId: job.requestId }))
    return job
  }
  const settled = async (id: string) => {
    for (let i = 0; i < 500; i++) {
      const j = await jobs.getById(id)
      if (j && ['succeeded', 'failed', 'canceled'].includes(j.state)) return j
      await new Promise((r) => setTimeout(r, 20))
    }
    throw new Error(`job ${id} did not finish`)
  }
  const totals = async () => {
    const buckets = await usage.query({
      tenant: 't1',
      from: 0,
      to: Date.now() + 60_000,
      bucketSeconds: 86_400,
    })
    return buckets.reduce(
      (s, b) => ({
        requests: s.requests + b.requests,
        prompt: s.prompt + b.promptTokens,
        completion: s.completion + b.completionTokens,
      }),
      { requests: 0, prompt: 0, completion: 0 },
    )
  }
  return { jobs, enqueue, settled, totals, writes, runs: () => runs }
}

describe('generation jobs are metered by their worker', () => {
  it('writes a succeeded job’s usage, labelled from its record, before the job is terminal', async () => {
    const s = await setup()
    const job = await s.enqueue({ prompt: 'a b c' })
    const done = await s.settled(job.id)
    expect(done.state).toBe('succeeded')
    // The job's answer is out: its usage is already committed.
    expect(await s.totals()).toEqual({ requests: 1, prompt: 3, completion: 3 })
    expect(s.writes).toHaveLength(1)
    expect(s.writes[0]!.state).toBe('running')
    expect(s.writes[0]!.rec).toMatchObject({
      id: jobUsageId(job.id),
      tenant: 't1',
      apiKeyId: 'key_1',
      model: 'tiny-7', // the job's resolved model id, as the edge labelled it
      kind: 'completion',
      requestId: 'req_1',
      cached: false,
      trainedTokens: 0,
    })
    const chat = await s.enqueue({ prompt: 'x', endpoint: 'chat.completions' })
    await s.settled(chat.id)
    expect(s.writes[1]!.rec.kind).toBe('chat.completion')
  })

  it('a job that runs twice (its outcome not recorded the first time) is counted once', async () => {
    const s = await setup()
    s.jobs.failSucceeded = 1 // the first run writes its usage, then cannot make the job terminal
    const job = await s.enqueue({ prompt: 'one two three four' })
    const done = await s.settled(job.id)
    expect(done.state).toBe('succeeded')
    expect(s.runs()).toBe(2) // redelivered after its visibility timeout, and run again
    expect(s.writes.map((w) => w.rec.id)).toEqual([jobUsageId(job.id), jobUsageId(job.id)])
    expect(await s.totals()).toEqual({ requests: 1, prompt: 4, completion: 4 })
  })

  it('meters a job canceled mid-way by what it generated; not a failed job, nor other kinds', async () => {
    const s = await setup()
    const long = Array.from({ length: 100 }, (_, i) => `w${i}`).join(' ')
    const job = await s.enqueue({ prompt: long, slow: true })
    for (let i = 0; i < 250 && (await s.jobs.getById(job.id))?.state !== 'running'; i++)
      await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 100))
    await s.jobs.requestCancel('t1', job.id)
    const canceled = await s.settled(job.id)
    expect(canceled.state).toBe('canceled')
    const partial = (canceled.output as CanceledGeneration).usage
    expect(partial.completionTokens).toBeGreaterThan(0)
    expect(partial.completionTokens).toBeLessThan(100)
    expect(await s.totals()).toEqual({ requests: 1, prompt: 100, completion: partial.completionTokens })

    const failed = await s.enqueue({ prompt: 'a b', fail: true })
    expect((await s.settled(failed.id)).state).toBe('failed')
    const other = await s.enqueue({ prompt: 'a b' }, 'other')
    expect((await s.settled(other.id)).state).toBe('succeeded')
    expect(s.writes).toHaveLength(1)
  })
})
