/**
 * A fine-tuning job survives its worker: a worker PROCESS is killed (SIGKILL)
 * mid-training after a checkpoint reached the ObjectStore; the queue gives
 * the message to a second worker process after the visibility timeout, and
 * that worker resumes from the checkpoint (not from step 0) and publishes the
 * model. Real local data folder: SQLite queue and job store, folder store.
 */
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { readManifest } from '../../core/model-manifest.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { createFile } from '../../core/records/files.js'
import {
  AUTO_HYPERPARAMETERS,
  type FineTuneInput,
  listCheckpoints,
  listEvents,
} from '../../core/records/fine-tunes.js'
import { capitalsJsonl, MINI_DIR } from '../../models/train/fixtures.js'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'

let h: Harness
afterAll(async () => {
  await h?.cleanup()
})

describe('fine-tuning when the worker dies', () => {
  it('a second worker resumes from the last checkpoint in the store and finishes the job', async () => {
    h = createHarness({
      PGPT_VISIBILITY_TIMEOUT_S: '10',
      PGPT_WORKER_KINDS: 'fine_tune',
      PGPT_LOG_LEVEL: 'info',
    })
    const store = new FsObjectStore({ root: join(h.dir, 'store') })
    await publishModelFolder(store, MINI_DIR, { id: 'prometheus-mini', owner: null, contextLength: 256 })
    await createFile(store, 'acme', {
      id: 'file-train',
      filename: 'train.jsonl',
      purpose: 'fine-tune',
      content: capitalsJsonl(96, 1),
    })
    const input: FineTuneInput = {
      model: 'prometheus-mini',
      training_file: 'file-train',
      validation_file: null,
      hyperparameters: { ...AUTO_HYPERPARAMETERS, n_epochs: 4, seq_len: 32 },
      suffix: 'crash',
      seed: 3,
      fine_tuned_model: 'ft:prometheus-mini:acme:crash:abc',
    }
    const a = h.spawnWorker()
    const job = await h.enqueue({ tenant: 'acme', kind: 'fine_tune', input, model: input.model })
    const first = await waitFor(
      async () => (await listCheckpoints(store, job.id))[0],
      90_000,
      'the first checkpoint',
    )
    a.kill('SIGKILL')
    await a.exited
    expect((await h.jobs.getById(job.id))?.state).toBe('running')

    const b = h.spawnWorker()
    const done = await h.settled(job.id, 120_000)
    expect(done.error).toBeUndefined()
    expect(done.state).toBe('succeeded')
    expect(done.attempts).toBe(2)
    b.kill('SIGTERM')
    await b.exited

    const events = (await listEvents(store, job.id, { limit: 1000 })).data.reverse()
    const messages = events.map((e) => e.message)
    const resumed = messages.find((m) => m.startsWith('Resuming from the checkpoint at step'))
    expect(resumed).toBeDefined()
    const resumedAt = Number(/step (\d+)/.exec(resumed!)![1])
    expect(resumedAt).toBeGreaterThanOrEqual(first.step_number)
    // After the resume, training went on from that step, not from step 1.
    const after = events.slice(messages.indexOf(resumed!))
    const firstStepAfter = after.find((e) => e.message.startsWith('Step '))!.data as { step: number }
    expect(firstStepAfter.step).toBe(resumedAt + 1)
    expect(messages.at(-1)).toBe('The job has successfully completed.')
    expect(await readManifest(store, input.fine_tuned_model)).toMatchObject({
      owner: 'acme',
      source: 'fine-tune',
    })
  }, 240_000)
})
