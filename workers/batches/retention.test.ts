/**
 * Retention on the worker side of batches: the output and error files carry
 * the expiry the batch was made with (`output_expires_after`, or the
 * configured default), and an input file that expired before planning fails
 * the batch with a reason that says so. In-memory ports, the handlers driven
 * job by job, a fake engine (as handlers.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryQueue } from '../../core/adapters/memory-queue.js'
import { silentLogger } from '../../core/logger.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import type { GenerationInput, GenerationOutput } from '../../core/protocol.js'
import { createFile, fileMetaKey, getFileObject } from '../../core/records/files.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'
import type { JobContext } from '../worker-loop.js'
import { chunkJobId, createBatchHandlers } from './handlers.js'

let t: TestEdge
afterEach(async () => {
  await t?.close()
})

const engine = {
  maxBatchSize: 8,
  async generate(input: GenerationInput): Promise<GenerationOutput> {
    if (input.prompt === 'p-bad') throw new Error('unexpected')
    return {
      model: input.model,
      choices: [{ index: 0, text: 'ok', finishReason: 'length', logprobs: null }],
      usage: { promptTokens: 1, completionTokens: 1 },
    }
  },
}

const ctxOf = (job: JobRecord): JobContext => ({
  job,
  signal: new AbortController().signal,
  logger: silentLogger,
  publish: async () => {},
  heartbeat: async () => {},
  checkCancel: async () => {},
  receiveCount: 3, // the last delivery: an unexpected line error is recorded, not retried
})

const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/completions',
    body: { model: 'echo-1', prompt: `p-${id}` },
  })

async function setup(env: Record<string, string> = {}) {
  t = await makeTestEdge({ worker: false, env })
  const handlers = createBatchHandlers({
    store: t.deps.store,
    jobs: t.deps.jobs,
    chunkQueue: new MemoryQueue('chunks'),
    engine,
    models: t.deps.models,
    maxReceiveCount: 3,
    linesPerChunk: 8,
    statusPollMs: 0,
  })
  const create = async (inputId: string, extra: Record<string, unknown> = {}) => {
    const res = await t.app.request('/v1/batches', {
      method: 'POST',
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      body: JSON.stringify({
        input_file_id: inputId,
        endpoint: '/v1/completions',
        completion_window: '24h',
        ...extra,
      }),
    })
    expect(res.status).toBe(200)
    return ((await res.json()) as { id: string }).id
  }
  const run = async (id: string) => {
    await handlers.batch(ctxOf((await t.deps.jobs.getById(id))!))
    const job = await t.deps.jobs.getById(chunkJobId(id, 0))
    if (job) await handlers.batch_chunk(ctxOf(job))
    const res = await t.app.request(`/v1/batches/${id}`, { headers: t.auth(t.keys.admin) })
    return (await res.json()) as {
      status: string
      output_file_id: string | null
      error_file_id: string | null
      errors: { data: Array<{ code: string; message: string }> } | null
    }
  }
  return { create, run }
}

describe('batch retention', () => {
  it('the output and error files expire output_expires_after after they are written', async () => {
    const s = await setup()
    const input = await createFile(t.deps.store, 't1', {
      filename: 'in.jsonl',
      purpose: 'batch',
      content: [line('a'), line('bad')].join('\n'),
    })
    const b = await s.run(
      await s.create(input.id, { output_expires_after: { anchor: 'created_at', seconds: 7200 } }),
    )
    expect(b.status).toBe('completed')
    for (const id of [b.output_file_id!, b.error_file_id!]) {
      const f = await getFileObject(t.deps.store, 't1', id)
      expect(f?.purpose).toBe('batch_output')
      expect(f?.expires_at).toBe(f!.created_at + 7200)
    }
  })

  it('without output_expires_after, the configured batch retention applies (0: kept)', async () => {
    const s = await setup({ PGPT_BATCH_FILE_RETENTION_DAYS: '2' })
    const input = await createFile(t.deps.store, 't1', {
      filename: 'in.jsonl',
      purpose: 'batch',
      content: line('a'),
    })
    const b = await s.run(await s.create(input.id))
    const out = await getFileObject(t.deps.store, 't1', b.output_file_id!)
    expect(out?.expires_at).toBe(out!.created_at + 2 * 86_400)
    await t.close()

    const kept = await setup({ PGPT_BATCH_FILE_RETENTION_DAYS: '0' })
    const again = await createFile(t.deps.store, 't1', {
      filename: 'in.jsonl',
      purpose: 'batch',
      content: line('a'),
    })
    const k = await kept.run(await kept.create(again.id))
    expect((await getFileObject(t.deps.store, 't1', k.output_file_id!))?.expires_at).toBeNull()
  })

  it('an input file that expired before planning fails the batch, saying it expired', async () => {
    const s = await setup()
    const input = await createFile(t.deps.store, 't1', {
      filename: 'in.jsonl',
      purpose: 'batch',
      content: line('a'),
      expiresAfterS: 3600,
    })
    const id = await s.create(input.id) // valid now
    // The batch then waits in the queue past the file's hour (its record as it will read then).
    await t.deps.store.put(
      fileMetaKey('t1', input.id),
      JSON.stringify({ ...input, expires_at: Math.floor(Date.now() / 1000) - 1 }),
    )
    const b = await s.run(id)
    expect(b.status).toBe('failed')
    expect(b.errors?.data).toEqual([
      expect.objectContaining({
        code: 'invalid_input_file',
        message: expect.stringMatching(new RegExp(`^The input file ${input.id} expired at \\d{4}-`)),
      }),
    ])
  })
})
