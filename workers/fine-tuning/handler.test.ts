/**
 * The `fine_tune` handler on the bundled prometheus-mini, over an in-memory
 * store and a hand-made JobContext: it trains, lowers the domain validation
 * loss, publishes the adapter beside its base for the tenant (merged for a
 * base that is not one of our exports); a drained run resumes from
 * its checkpoint; the quality gate refuses a fine-tune that makes the
 * validation data worse.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryEvents } from '../../core/adapters/memory-events.js'
import { MemoryJobStore } from '../../core/adapters/memory-job-store.js'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { memoryQueueWithDeadLetter } from '../../core/adapters/memory-queue.js'
import { SqliteUsageStore } from '../../core/adapters/sqlite-usage-store.js'
import { createLogger } from '../../core/logger.js'
import { isAdapterManifest, readManifest } from '../../core/model-manifest.js'
import { publishModelFolder } from '../../core/model-publish.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { createFile } from '../../core/records/files.js'
import {
  AUTO_HYPERPARAMETERS,
  type FineTuneInput,
  listCheckpoints,
  listEvents,
} from '../../core/records/fine-tunes.js'
import { capitalsJsonl, MINI_DIR, templateCorpus } from '../../models/train/fixtures.js'
import { PermanentError } from '../errors.js'
import { JobAbortError, type JobContext, runWorker } from '../worker-loop.js'
import { createFineTuneHandler, FINE_TUNE_TARGETS } from './handler.js'

let dir: string
const store = new MemoryObjectStore()
const logger = createLogger({ service: 'test', level: 'silent' })

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgpt-ft-'))
  await publishModelFolder(store, MINI_DIR, { id: 'prometheus-mini', owner: null, contextLength: 256 })
  await createFile(store, 'acme', {
    id: 'file-train',
    filename: 'train.jsonl',
    purpose: 'fine-tune',
    content: capitalsJsonl(64, 1),
  })
  await createFile(store, 'acme', {
    id: 'file-valid',
    filename: 'valid.jsonl',
    purpose: 'fine-tune',
    content: capitalsJsonl(24, 2),
  })
  // General English: what overfitting the capitals should make worse.
  await createFile(store, 'acme', {
    id: 'file-prose',
    filename: 'prose.jsonl',
    purpose: 'fine-tune',
    content: templateCorpus(40, 3)
      .map((t) => JSON.stringify({ prompt: '', completion: t }))
      .join('\n'),
  })
}, 60_000)
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

let n = 0
function job(over: Partial<FineTuneInput> = {}): JobRecord {
  const id = `ftjob-test${++n}`
  const input: FineTuneInput = {
    model: 'prometheus-mini',
    training_file: 'file-train',
    validation_file: 'file-valid',
    hyperparameters: { ...AUTO_HYPERPARAMETERS, n_epochs: 2, seq_len: 32 },
    suffix: 'caps',
    seed: 1,
    fine_tuned_model: `ft:prometheus-mini:acme:caps:test${n}`,
    ...over,
  }
  return {
    id,
    tenant: 'acme',
    kind: 'fine_tune',
    state: 'running',
    input,
    attempts: 1,
    cancelRequested: false,
    createdAt: Date.now(),
    updatedAt: Date.now(),
  }
}

function context(j: JobRecord, ctrl = new AbortController()): JobContext & { progress: unknown[] } {
  const progress: unknown[] = []
  return {
    job: j,
    signal: ctrl.signal,
    logger,
    progress,
    publish: async (type, data) => {
      if (type === 'progress') progress.push(data)
    },
    heartbeat: async () => {},
    checkCancel: async () => {},
    receiveCount: 1,
  }
}

/** The error a run fails with (a run that succeeds fails the test). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected the job to fail')
    },
    (e: unknown) => e as PermanentError,
  )

const allEvents = async (id: string) => (await listEvents(store, id, { limit: 1000 })).data.reverse()

describe('fine_tune handler', () => {
  it('trains LoRA adapters, lowers the validation loss and publishes the adapter for the tenant', async () => {
    const usage = new SqliteUsageStore({ file: join(dir, 'usage.db') })
    const handler = createFineTuneHandler({ store, workDir: dir, threads: 1, usage })
    const j = job()
    const out = await handler(context(j))
    const input = j.input as FineTuneInput
    expect(out).toMatchObject({ fine_tuned_model: input.fine_tuned_model })
    const r = out as { valid_loss: number; base_valid_loss: number; steps: number; trained_tokens: number }
    expect(r.valid_loss).toBeLessThan(r.base_valid_loss - 0.5)
    expect(r.trained_tokens).toBe(r.steps * 4 * 32)
    // Metered once, with the trained tokens, for the job's tenant.
    const metered = await usage.query({
      tenant: j.tenant,
      from: 0,
      to: Date.now() + 1000,
      bucketSeconds: 86_400 * 365 * 100,
    })
    expect(metered.map((b) => [b.requests, b.trainedTokens])).toEqual([[1, r.trained_tokens]])
    await usage.close()
    // Published as an adapter beside its base: no weights or graph of its own.
    const m = await readManifest(store, input.fine_tuned_model)
    expect(m).toMatchObject({ owner: 'acme', source: 'fine-tune', base_model: 'prometheus-mini' })
    expect(isAdapterManifest(m!)).toBe(true)
    expect(m!.files.map((f) => f.path).sort()).toEqual([
      'README.md',
      'adapter/adapter_config.json',
      'adapter/adapter_model.safetensors',
      'config.json',
      'generation_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ])
    const adapterConfig = JSON.parse(
      new TextDecoder().decode((await store.get(`models/${m!.id}/adapter/adapter_config.json`))!),
    )
    const baseWeights = (await readManifest(store, 'prometheus-mini'))!.files.find(
      (f) => f.path === 'model.safetensors',
    )!
    expect(adapterConfig).toMatchObject({
      r: 8,
      base_model_name_or_path: 'prometheus-mini',
      target_modules: FINE_TUNE_TARGETS,
      revision: baseWeights.sha256,
    })
    const events = await allEvents(j.id)
    const steps = events.filter((e) => e.message.startsWith('Step '))
    expect(steps).toHaveLength(r.steps)
    expect(events.at(-1)?.message).toBe('The job has successfully completed.')
    const ck = await listCheckpoints(store, j.id)
    expect(ck.at(-1)?.step_number).toBe(r.steps)
  }, 90_000)

  it('publishes a merged model when the base is not one of our exports', async () => {
    // The same weights behind a graph another exporter wrote: workers cannot give it adapter slots.
    const foreign = join(dir, 'foreign')
    await cp(MINI_DIR, foreign, { recursive: true })
    const graph = await readFile(join(foreign, 'onnx/model.onnx'))
    graph.set(Buffer.from('somebody-elses'), graph.indexOf('prometheus-gpt'))
    await writeFile(join(foreign, 'onnx/model.onnx'), graph)
    await publishModelFolder(store, foreign, { id: 'foreign-mini', owner: null, contextLength: 256 })
    const handler = createFineTuneHandler({ store, workDir: dir, threads: 1 })
    const j = job({
      model: 'foreign-mini',
      hyperparameters: { ...AUTO_HYPERPARAMETERS, n_epochs: 1, seq_len: 32 },
      fine_tuned_model: 'ft:foreign-mini:acme:caps:merged',
    })
    await handler(context(j))
    const m = await readManifest(store, 'ft:foreign-mini:acme:caps:merged')
    expect(m).toMatchObject({ source: 'fine-tune', base_model: 'foreign-mini' })
    expect(isAdapterManifest(m!)).toBe(false)
    expect(m!.files.map((f) => f.path)).toEqual(
      expect.arrayContaining(['onnx/model.onnx', 'model.safetensors', 'adapter/adapter_model.safetensors']),
    )
  }, 90_000)

  it.each([
    ['a drained run', 'shutdown'],
    ["a run stopped before the queue's hold cap", 'hold_expiring'],
  ] as const)(
    '%s saves a checkpoint and the next run resumes from it',
    async (_, kind) => {
      const handler = createFineTuneHandler({ store, workDir: dir, threads: 1, checkpointEvery: 1000 })
      const j = job()
      const ctrl = new AbortController()
      const ctx = context(j, ctrl)
      const first = handler({
        ...ctx,
        publish: async (type, data) => {
          if (type === 'progress' && (data as { step: number }).step === 3)
            ctrl.abort(new JobAbortError(kind))
        },
      })
      await expect(first).rejects.toBeInstanceOf(JobAbortError)
      expect((await listCheckpoints(store, j.id)).map((c) => c.step_number)).toEqual([3])

      const second = context(j)
      const out = (await handler(second)) as { steps: number; valid_loss: number; base_valid_loss: number }
      expect(second.progress.map((p) => (p as { step: number }).step)[0]).toBe(4)
      expect(out.valid_loss).toBeLessThan(out.base_valid_loss)
      const events = await allEvents(j.id)
      // The same steps in all as a run never stopped.
      const planned = events.find((e) => e.message.startsWith('Files validated'))?.data as {
        total_steps: number
      }
      expect(out.steps).toBe(planned.total_steps)
      expect(second.progress.at(-1)).toMatchObject({ step: planned.total_steps })
      expect(events.map((e) => e.message)).toContain('Resuming from the checkpoint at step 3.')
    },
    90_000,
  )

  it("under the worker loop, a fine-tune longer than the queue's hold cap is resumed from its checkpoint and finishes", async () => {
    // A queue that holds a delivery 20 s at most (SQS: 12 h). The first run's steps are slowed to a
    // second each, so it cannot finish within its hold: the loop stops it before the cap, it checkpoints,
    // and a fresh message resumes it. Later runs go at full speed (20 s leaves room for a loaded machine
    // to set a run up: a run that cannot would make no progress).
    const handler = createFineTuneHandler({ store, workDir: dir, threads: 1, checkpointEvery: 1000 })
    const runs: Array<{ receiveCount: number; steps: number[] }> = []
    const { queue, deadLetter } = memoryQueueWithDeadLetter(2, 2, { maxHoldSeconds: 20 })
    const jobs = new MemoryJobStore()
    const ctrl = new AbortController()
    const lines: Array<Record<string, unknown>> = []
    const worker = runWorker({
      queue,
      jobs,
      events: new MemoryEvents(),
      signal: ctrl.signal,
      visibilityTimeoutSeconds: 2,
      maxReceiveCount: 2,
      waitTimeSeconds: 1,
      heartbeatIntervalMs: 250,
      abortWaitMs: 5000, // time to save the checkpoint; the margin is then a quarter of the cap, 5 s
      logger: createLogger({
        service: 'worker',
        level: 'info',
        destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
      }),
      handlers: {
        fine_tune: (ctx) => {
          const run = { receiveCount: ctx.receiveCount, steps: [] as number[] }
          runs.push(run)
          return handler({
            ...ctx,
            publish: async (type, data) => {
              await ctx.publish(type, data)
              if (type !== 'progress') return
              run.steps.push((data as { step: number }).step)
              if (runs.length === 1) await new Promise((r) => setTimeout(r, 1000))
            },
          })
        },
      },
    })
    const j = job()
    const created = await jobs.create({ tenant: 'acme', kind: 'fine_tune', input: j.input })
    await queue.send(JSON.stringify({ jobId: created.id, kind: 'fine_tune' }))
    let done = await jobs.getById(created.id)
    for (const end = Date.now() + 120_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      done = await jobs.getById(created.id)
      if (done && ['succeeded', 'failed', 'canceled'].includes(done.state)) break
    }
    ctrl.abort()
    await worker
    const events = await allEvents(created.id)
    const planned = events.find((e) => e.message.startsWith('Files validated'))?.data as {
      total_steps: number
    }
    expect(done).toMatchObject({ state: 'succeeded', output: { steps: planned.total_steps } })
    expect(runs.length).toBeGreaterThanOrEqual(2)
    expect(done?.attempts).toBe(runs.length)
    // Every run from a fresh message, going on from the step after a checkpoint.
    expect(runs.map((r) => r.receiveCount)).toEqual(runs.map(() => 1))
    const total = Array.from({ length: planned.total_steps }, (_, i) => i + 1)
    expect(new Set(runs.flatMap((r) => r.steps))).toEqual(new Set(total))
    const checkpoints = (await listCheckpoints(store, created.id)).map((c) => c.step_number)
    const messages = events.map((e) => e.message)
    for (const r of runs.slice(1)) {
      expect(checkpoints).toContain(r.steps[0]! - 1)
      expect(messages).toContain(`Resuming from the checkpoint at step ${r.steps[0]! - 1}.`)
    }
    // The first run saved its last step as it stopped: none of its progress is lost.
    expect(runs[1]!.steps[0]).toBe(runs[0]!.steps.at(-1)! + 1)
    expect(
      lines.filter((l) => l.msg === "job given back before the queue's hold cap; sent again to resume"),
    ).toHaveLength(runs.length - 1)
    expect(await deadLetter.receive()).toEqual([])
  }, 150_000)

  it('the quality gate fails a fine-tune that is worse than the base on the validation file', async () => {
    const handler = createFineTuneHandler({ store, workDir: dir, threads: 1 })
    const j = job({
      validation_file: 'file-prose',
      hyperparameters: { ...AUTO_HYPERPARAMETERS, n_epochs: 3, seq_len: 32, learning_rate_multiplier: 3 },
    })
    const err = await failure(handler(context(j)))
    expect(err).toBeInstanceOf(PermanentError)
    expect(err.code).toBe('quality_gate')
    expect(await readManifest(store, (j.input as FineTuneInput).fine_tuned_model)).toBeNull()
    const last = (await allEvents(j.id)).at(-1)
    expect(last).toMatchObject({ level: 'error' })
    expect(last?.message).toMatch(/worse than the base model/)
  }, 90_000)

  it('fails before training when the steps are beyond maxSteps (PGPT_MAX_FINE_TUNE_STEPS), auto epochs lowered to one first', async () => {
    const handler = createFineTuneHandler({ store, workDir: dir, threads: 1, maxSteps: 1 })
    const given = await failure(handler(context(job())))
    expect(given).toMatchObject({ code: 'too_many_steps' })
    expect(given.message).toMatch(/\(2 epochs of \d+ rows/)
    const auto = await failure(
      handler(context(job({ hyperparameters: { ...AUTO_HYPERPARAMETERS, seq_len: 32 } }))),
    )
    expect(auto).toMatchObject({ code: 'too_many_steps' })
    expect(auto.message).toMatch(/\(1 epochs of \d+ rows/)
  }, 60_000)

  it('fails at once on a missing or invalid file', async () => {
    const handler = createFineTuneHandler({ store, workDir: dir })
    await createFile(store, 'acme', {
      id: 'file-bad',
      filename: 'b.jsonl',
      purpose: 'fine-tune',
      content: '{"x":1}\n',
    })
    const missing = await failure(handler(context(job({ training_file: 'file-nope' }))))
    expect(missing).toMatchObject({ code: 'invalid_training_file' })
    const bad = await failure(handler(context(job({ training_file: 'file-bad' }))))
    expect(bad).toMatchObject({ code: 'invalid_training_file' })
    expect(bad.message).toMatch(/line 1/)
    // Another tenant's file does not exist for this tenant.
    const other = await failure(handler(context({ ...job(), tenant: 'other' })))
    expect(other).toMatchObject({ code: 'invalid_training_file' })
  }, 30_000)
})
