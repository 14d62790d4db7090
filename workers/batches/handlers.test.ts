/**
 * The batch handlers over in-memory ports, driven job by job (the worker loop
 * and real processes are covered by test/e2e/batches*.test.ts): the edge's
 * routes create the batch, a fake engine answers, and each test runs the
 * `batch` job and chosen chunks itself to pin an order (redelivery, cancel,
 * expiry, the line limit).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryQueue } from '../../core/adapters/memory-queue.js'
import { silentLogger } from '../../core/logger.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import type { GenerationInput, GenerationOutput } from '../../core/protocol.js'
import { getBatch, listResults } from '../../core/records/batches.js'
import { createFile, deleteFile } from '../../core/records/files.js'
import { createKey } from '../../edge/keys.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'
import type { JobContext } from '../worker-loop.js'
import { type BatchHandlerDeps, chunkJobId, createBatchHandlers } from './handlers.js'

let t: TestEdge
afterEach(async () => {
  await t?.close()
})

class FakeEngine {
  maxBatchSize = 8
  calls = 0
  running = 0
  maxRunning = 0
  delayMs = 0
  async generate(input: GenerationInput, o: { signal?: AbortSignal } = {}): Promise<GenerationOutput> {
    this.calls++
    this.running++
    this.maxRunning = Math.max(this.maxRunning, this.running)
    try {
      await new Promise((r) => setTimeout(r, this.delayMs))
      if (o.signal?.aborted) throw o.signal.reason
      const text = `echo:${input.prompt ?? input.messages?.at(-1)?.content ?? ''}`
      return {
        model: input.model,
        choices: [{ index: 0, text, finishReason: 'length', logprobs: null }],
        usage: { promptTokens: 3, completionTokens: input.sampling.maxTokens },
      }
    } finally {
      this.running--
    }
  }
}

const ctxOf = (job: JobRecord, receiveCount = 1): JobContext => ({
  job,
  signal: new AbortController().signal,
  logger: silentLogger,
  publish: async () => {},
  heartbeat: async () => {},
  checkCancel: async () => {},
  receiveCount,
})

const line = (id: string, extra: Record<string, unknown> = {}, url = '/v1/completions') =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url,
    body: { model: 'echo-1', prompt: `p-${id}`, max_tokens: 2, ...extra },
  })

async function setup(o: Partial<BatchHandlerDeps> = {}) {
  t = await makeTestEdge({ worker: false })
  const engine = new FakeEngine()
  const chunkQueue = new MemoryQueue('chunks')
  const notified: string[] = []
  const handlers = createBatchHandlers({
    store: t.deps.store,
    jobs: t.deps.jobs,
    chunkQueue,
    engine,
    models: t.deps.models,
    maxReceiveCount: 3,
    usage: t.deps.usage,
    linesPerChunk: 4,
    statusPollMs: 0,
    notify: (b) => {
      notified.push(`${b.id}:${b.status}`)
    },
    ...o,
  })
  const call = (method: string, path: string, body?: unknown) =>
    t.app.request(path, {
      method,
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    })
  const createBatch = async (content: string, window = '24h') => {
    const file = await createFile(t.deps.store, 't1', { filename: 'in.jsonl', purpose: 'batch', content })
    const res = await call('POST', '/v1/batches', {
      input_file_id: file.id,
      endpoint: '/v1/completions',
      completion_window: window,
    })
    expect(res.status).toBe(200)
    return ((await res.json()) as { id: string }).id
  }
  const runBatchJob = async (id: string) => handlers.batch(ctxOf((await t.deps.jobs.getById(id))!))
  const runChunk = async (id: string, n: number, receiveCount = 1) =>
    handlers.batch_chunk(ctxOf((await t.deps.jobs.getById(chunkJobId(id, n)))!, receiveCount))
  const view = async (id: string) =>
    (await (await call('GET', `/v1/batches/${id}`)).json()) as {
      status: string
      request_counts: { total: number; completed: number; failed: number }
      output_file_id: string | null
      error_file_id: string | null
    }
  const lines = async (fileId: string | null) =>
    fileId
      ? (await (await call('GET', `/v1/files/${fileId}/content`)).text())
          .trim()
          .split('\n')
          .map(
            (l) =>
              JSON.parse(l) as {
                custom_id: string | null
                response: { status_code: number; body: { choices?: Array<{ text: string }> } } | null
                error: { code: string; message: string } | null
              },
          )
      : []
  return { engine, chunkQueue, handlers, notified, call, createBatch, runBatchJob, runChunk, view, lines }
}

describe('batch handlers', () => {
  it('plans, runs chunks and finalizes; malformed lines go to the error file with a reason', async () => {
    const s = await setup()
    const content = [
      line('a'),
      '{not json',
      line('b', {}, '/v1/chat/completions'),
      line('c', { temperature: 9 }),
      line('d'),
      line('e'),
      line('f'),
      line('g'),
    ].join('\n')
    const id = await s.createBatch(content)
    expect((await s.view(id)).status).toBe('validating')
    await s.runBatchJob(id)
    const planned = await s.view(id)
    expect(planned.status).toBe('in_progress')
    expect(planned.request_counts).toEqual({ total: 8, completed: 0, failed: 3 })
    // 5 good lines in chunks of 4: two chunk jobs, each enqueued once.
    expect(s.chunkQueue.entries.length).toBe(2)
    await s.runChunk(id, 0)
    expect((await s.view(id)).request_counts).toEqual({ total: 8, completed: 4, failed: 3 })
    expect(s.notified).toEqual([])
    await s.runChunk(id, 1)
    const done = await s.view(id)
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 8, completed: 5, failed: 3 })
    expect(s.notified).toEqual([`${id}:completed`])
    const out = await s.lines(done.output_file_id)
    expect(out.map((l) => l.custom_id).sort()).toEqual(['a', 'd', 'e', 'f', 'g'])
    expect(out.find((l) => l.custom_id === 'a')?.response?.body.choices?.[0].text).toBe('echo:p-a')
    const errs = await s.lines(done.error_file_id)
    expect(errs).toHaveLength(3)
    const byId = new Map(errs.map((l) => [l.custom_id, l]))
    expect(byId.get(null)?.error).toMatchObject({
      code: 'invalid_json',
      message: expect.stringMatching(/^line 2: invalid JSON/),
    })
    expect(byId.get('b')?.error?.code).toBe('invalid_url')
    expect(byId.get('c')?.response?.status_code).toBe(400)
    // A completed batch cannot be cancelled.
    expect((await s.call('POST', `/v1/batches/${id}/cancel`)).status).toBe(409)
  })

  it('a batch without one valid line fails validation, each line with its reason, and runs nothing', async () => {
    const s = await setup()
    const id = await s.createBatch(
      ['{not json', line('b', {}, '/v1/chat/completions'), line('c', { temperature: 9 })].join('\n'),
    )
    await s.runBatchJob(id)
    const v = (await s.view(id)) as unknown as {
      status: string
      request_counts: { total: number; completed: number; failed: number }
      errors: { data: Array<{ code: string; line: number | null; param: string | null }> }
    }
    expect(v.status).toBe('failed')
    expect(v.request_counts).toEqual({ total: 3, completed: 0, failed: 3 })
    expect(v.errors.data.map((e) => [e.line, e.code])).toEqual([
      [1, 'invalid_json'],
      [2, 'invalid_url'],
      [3, expect.any(String)],
    ])
    expect(s.chunkQueue.entries).toHaveLength(0)
    expect(s.engine.calls).toBe(0)
    expect(s.notified).toEqual([`${id}:failed`])
  })

  it('a line with a parameter we do not implement gets 400 unsupported_parameter naming it, as a request would', async () => {
    const s = await setup()
    const id = await s.createBatch(
      [line('a'), line('b', { logit_bias: { '1': 5 } }), line('c', { suffix: '!' })].join('\n'),
    )
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    const done = await s.view(id)
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 3, completed: 1, failed: 2 })
    const errs = new Map((await s.lines(done.error_file_id)).map((l) => [l.custom_id, l]))
    for (const [customId, param] of [
      ['b', 'logit_bias'],
      ['c', 'suffix'],
    ] as const) {
      const r = errs.get(customId)?.response as unknown as {
        status_code: number
        body: { error: { code: string; param: string | null; message: string } }
      }
      expect(r.status_code).toBe(400)
      expect(r.body.error).toMatchObject({ code: 'unsupported_parameter', param })
      expect(r.body.error.message).toContain(`'${param}'`)
    }
  })

  it('a chat batch line with a field inside a message we do not implement is refused by its path', async () => {
    const s = await setup()
    const chatLine = (id: string, body: Record<string, unknown>) =>
      JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body })
    const file = await createFile(t.deps.store, 't1', {
      filename: 'chat.jsonl',
      purpose: 'batch',
      content: [
        chatLine('ok', { model: 'echo-1', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
        chatLine('bad', {
          model: 'echo-1',
          messages: [
            { role: 'user', content: 'hi' },
            { role: 'assistant', content: 'x', tool_calls: [] },
          ],
          max_tokens: 2,
        }),
      ].join('\n'),
    })
    const res = await s.call('POST', '/v1/batches', {
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    })
    const id = ((await res.json()) as { id: string }).id
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    const done = await s.view(id)
    expect(done.request_counts).toEqual({ total: 2, completed: 1, failed: 1 })
    const bad = (await s.lines(done.error_file_id)).find((l) => l.custom_id === 'bad')
      ?.response as unknown as {
      status_code: number
      body: { error: { code: string; param: string | null } }
    }
    expect(bad.status_code).toBe(400)
    expect(bad.body.error).toMatchObject({ code: 'unsupported_parameter', param: 'messages[1].tool_calls' })
  })

  it('a chunk delivered again runs nothing twice and the batch has one line per custom_id', async () => {
    const s = await setup()
    const id = await s.createBatch(['a', 'b', 'c', 'd', 'e'].map((x) => line(x)).join('\n'))
    await s.runBatchJob(id)
    // The batch job itself delivered again: no new chunk jobs, messages sent again (harmless).
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    expect(s.engine.calls).toBe(4)
    await s.runChunk(id, 0, 2)
    expect(s.engine.calls).toBe(4)
    await s.runChunk(id, 1)
    await s.runChunk(id, 1, 2)
    expect(s.engine.calls).toBe(5)
    const done = await s.view(id)
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 5, completed: 5, failed: 0 })
    expect((await s.lines(done.output_file_id)).map((l) => l.custom_id).sort()).toEqual([
      'a',
      'b',
      'c',
      'd',
      'e',
    ])
    expect(s.notified).toEqual([`${id}:completed`])
    expect((await listResults(t.deps.store, 't1', id)).size).toBe(5)
    // Usage: one `batch` record per line, under the key that created the batch.
    expect(t.usage.records).toHaveLength(5)
    expect(
      t.usage.records.every((r) => r.kind === 'batch' && r.tenant === 't1' && r.completionTokens === 2),
    ).toBe(true)
  })

  it('cancel: lines not started are skipped, the batch ends cancelled with partial output', async () => {
    const s = await setup()
    const id = await s.createBatch(['a', 'b', 'c', 'd', 'e', 'f'].map((x) => line(x)).join('\n'))
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    const res = await s.call('POST', `/v1/batches/${id}/cancel`)
    expect(res.status).toBe(200)
    expect(((await res.json()) as { status: string }).status).toBe('cancelling')
    await s.runChunk(id, 1)
    const done = await s.view(id)
    expect(done.status).toBe('cancelled')
    expect(done.request_counts).toEqual({ total: 6, completed: 4, failed: 2 })
    expect((await s.lines(done.output_file_id)).map((l) => l.custom_id).sort()).toEqual(['a', 'b', 'c', 'd'])
    const errs = await s.lines(done.error_file_id)
    expect(errs.map((l) => [l.custom_id, l.error?.code])).toEqual([
      ['e', 'batch_cancelled'],
      ['f', 'batch_cancelled'],
    ])
    expect(s.engine.calls).toBe(4)
    // Cancelling again answers the cancelled batch.
    const again = await s.call('POST', `/v1/batches/${id}/cancel`)
    expect(again.status).toBe(200)
    expect(((await again.json()) as { status: string }).status).toBe('cancelled')
  })

  it('cancel before the batch job runs: it ends cancelled without running anything', async () => {
    const s = await setup()
    const id = await s.createBatch(line('a'))
    expect((await s.call('POST', `/v1/batches/${id}/cancel`)).status).toBe(200)
    await s.runBatchJob(id)
    expect((await s.view(id)).status).toBe('cancelled')
    expect(s.engine.calls).toBe(0)
  })

  it('expiry: what is done is kept, the rest fails with batch_expired', async () => {
    const s = await setup()
    const id = await s.createBatch(['a', 'b', 'c', 'd', 'e'].map((x) => line(x)).join('\n'), '1s')
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    const b = await getBatch(t.deps.store, 't1', id)
    await new Promise((r) => setTimeout(r, Math.max(0, b!.expires_at * 1000 - Date.now()) + 20))
    await s.runChunk(id, 1)
    const done = await s.view(id)
    expect(done.status).toBe('expired')
    expect(done.request_counts).toEqual({ total: 5, completed: 4, failed: 1 })
    expect((await s.lines(done.error_file_id)).map((l) => [l.custom_id, l.error?.code])).toEqual([
      ['e', 'batch_expired'],
    ])
    expect(s.notified).toEqual([`${id}:expired`])
  })

  it('batch lines hold at most half of the engine rows (the rest stay free for interactive requests)', async () => {
    const s = await setup({ linesPerChunk: 20 })
    s.engine.delayMs = 15
    const id = await s.createBatch(Array.from({ length: 20 }, (_, i) => line(`l${i}`)).join('\n'))
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    expect(s.engine.calls).toBe(20)
    expect(s.engine.maxRunning).toBe(4)
    expect((await s.view(id)).status).toBe('completed')
  })

  it('a dead-lettered chunk: its unfinished lines fail and the batch still ends', async () => {
    const s = await setup()
    const id = await s.createBatch(['a', 'b', 'c', 'd', 'e', 'f'].map((x) => line(x)).join('\n'))
    await s.runBatchJob(id)
    await s.runChunk(id, 0)
    await s.handlers.abandonChunk('t1', id, 1)
    const done = await s.view(id)
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 6, completed: 4, failed: 2 })
    expect((await s.lines(done.error_file_id)).map((l) => [l.custom_id, l.error?.code])).toEqual([
      ['e', 'batch_line_failed'],
      ['f', 'batch_line_failed'],
    ])
  })

  it('an unexpected line error retries the chunk, and is recorded on its last delivery', async () => {
    const s = await setup()
    const id = await s.createBatch(['a', 'b'].map((x) => line(x)).join('\n'))
    await s.runBatchJob(id)
    const generate = s.engine.generate.bind(s.engine)
    s.engine.generate = async (input, o) => {
      if (input.prompt === 'p-b') throw new Error('disk on fire')
      return generate(input, o)
    }
    await expect(s.runChunk(id, 0, 1)).rejects.toThrow('disk on fire')
    expect((await s.view(id)).status).toBe('in_progress')
    await s.runChunk(id, 0, 3)
    const done = await s.view(id)
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 2, completed: 1, failed: 1 })
    const err = (await s.lines(done.error_file_id))[0]
    expect(err.custom_id).toBe('b')
    expect(err.response?.status_code).toBe(500)
    // Line a reached the engine once (line b never does): its result from the first delivery stood.
    expect(s.engine.calls).toBe(1)
  })

  it('an input file with more lines than the cap fails validation with too_many_lines and runs nothing', async () => {
    const s = await setup({ maxLines: 2 })
    const id = await s.createBatch([line('a'), line('b'), line('c')].join('\n'))
    await s.runBatchJob(id)
    const v = (await s.view(id)) as unknown as {
      status: string
      errors: { data: Array<{ code: string; message: string }> }
    }
    expect(v.status).toBe('failed')
    expect(v.errors.data[0].code).toBe('too_many_lines')
    expect(v.errors.data[0].message).toContain('at most 2 requests')
    expect(s.chunkQueue.entries).toHaveLength(0)
    expect(s.engine.calls).toBe(0)
    // At the cap it runs.
    const ok = await s.createBatch([line('d'), line('e')].join('\n'))
    await s.runBatchJob(ok)
    expect((await s.view(ok)).status).toBe('in_progress')
  })

  it('an input file deleted before the batch job runs fails the batch', async () => {
    const s = await setup()
    const id = await s.createBatch(line('a'))
    const b = await getBatch(t.deps.store, 't1', id)
    // The API refuses while the batch is unfinished; the store can still lose the file.
    expect((await s.call('DELETE', `/v1/files/${b!.input_file_id}`)).status).toBe(409)
    await deleteFile(t.deps.store, 't1', b!.input_file_id)
    await s.runBatchJob(id)
    const v = (await s.view(id)) as unknown as { status: string; errors: { data: Array<{ code: string }> } }
    expect(v.status).toBe('failed')
    expect(v.errors.data[0].code).toBe('invalid_input_file')
    expect(s.notified).toEqual([`${id}:failed`])
  })
})

describe('batch routes', () => {
  it('refuse bad input and are tenant-scoped', async () => {
    const s = await setup()
    const ft = await createFile(t.deps.store, 't1', { filename: 'f', purpose: 'fine-tune', content: '{}' })
    const post = (body: unknown, key = t.keys.admin) =>
      t.app.request('/v1/batches', {
        method: 'POST',
        headers: { ...t.auth(key), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    const base = { endpoint: '/v1/completions', completion_window: '24h' }
    expect((await post({ ...base, input_file_id: ft.id })).status).toBe(400)
    expect((await post({ ...base, input_file_id: 'file-nope' })).status).toBe(404)
    const id = await s.createBatch(line('a'))
    const input = (await getBatch(t.deps.store, 't1', id))!.input_file_id
    expect((await post({ ...base, completion_window: '48h', input_file_id: input })).status).toBe(400)
    expect((await post({ ...base, endpoint: '/v1/embeddings', input_file_id: input })).status).toBe(400)
    expect((await post({ ...base, input_file_id: input }, t.keys.generate)).status).toBe(403)
    expect((await post({ ...base, input_file_id: input, webhook: 'http://127.0.0.1/x' })).status).toBe(422)
    // Another tenant's key, with the batch scope: the batch is not there for it.
    const otherKey = (await createKey(t.deps.keys, { tenant: 't2', name: 'other-batch', scopes: ['batch'] }))
      .secret
    const other = (path: string, method = 'GET') => t.app.request(path, { method, headers: t.auth(otherKey) })
    expect((await other(`/v1/batches/${id}`)).status).toBe(404)
    expect((await other(`/v1/batches/${id}/cancel`, 'POST')).status).toBe(404)
    expect((await t.app.request(`/v1/batches/${id}`, { headers: t.auth(t.keys.other) })).status).toBe(403)
    expect(((await (await other('/v1/batches')).json()) as { data: unknown[] }).data).toEqual([])
    const mine = (await (await s.call('GET', '/v1/batches?limit=1')).json()) as {
      data: Array<{ id: string; object: string }>
    }
    expect(mine.data.map((b) => b.id)).toEqual([id])
    expect(Object.keys(mine.data[0])).not.toContain('internal')
  })
})
