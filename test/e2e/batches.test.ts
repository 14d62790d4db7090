/**
 * Batches over the whole local stack: the edge on @hono/node-server (SQLite
 * queue and job records, folder store), a worker PROCESS (workers/main.ts with
 * PGPT_WORKER_KINDS=generation,batch) serving the bundled model
 * models/prometheus-mini, and a real webhook receiver.
 *
 * - 500 lines, 10 of them bad in four ways: the batch completes with exact
 *   counts, one output line per good custom_id, one error line (with a
 *   reason) per bad one, and request_counts move while it runs.
 * - The official `openai` client uploads a file, creates and polls a batch,
 *   and downloads its output.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishBundledModels } from '../../bin/bundled-models.js'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { tenantWebhookSecret } from '../../core/webhook-secrets.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'batches-internal-token-0123456789'
const MODEL = 'prometheus-mini'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let receiver: Receiver
let apiKey: string

beforeAll(async () => {
  h = createHarness()
  receiver = await startReceiver()
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
    PGPT_RATE_LIMIT_RPM: '100000',
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  const published = await publishBundledModels(edge.deps.store, join(import.meta.dirname, '../../models'))
  expect(published.map((m) => m.id)).toContain(MODEL)
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate', 'batch'] }))
    .secret
  worker = await h.startEdgeWorker('generation,batch', edge.url, TOKEN)
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await receiver?.close()
  await h?.cleanup()
})

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${apiKey}`, ...init.headers },
  })

async function upload(text: string): Promise<string> {
  const form = new FormData()
  form.set('purpose', 'batch')
  form.set('file', new File([text], 'requests.jsonl'))
  const res = await api('/v1/files', { method: 'POST', body: form })
  expect(res.status).toBe(200)
  return ((await res.json()) as { id: string }).id
}

interface Batch {
  id: string
  status: string
  request_counts: { total: number; completed: number; failed: number }
  output_file_id: string | null
  error_file_id: string | null
  completed_at: number | null
  in_progress_at: number | null
  finalizing_at: number | null
}

const getBatch = async (id: string) => (await (await api(`/v1/batches/${id}`)).json()) as Batch
const fileLines = async (id: string) =>
  (await (await api(`/v1/files/${id}/content`)).text())
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as OutputLine)

interface OutputLine {
  id: string
  custom_id: string | null
  response: { status_code: number; request_id: string; body: Record<string, unknown> } | null
  error: { code: string; message: string } | null
}

const chat = (i: number, body: Record<string, unknown> = {}) => ({
  custom_id: `req-${i}`,
  method: 'POST',
  url: '/v1/chat/completions',
  body: {
    model: MODEL,
    messages: [{ role: 'user', content: `Tell me about number ${i}` }],
    max_tokens: 2,
    temperature: 0,
    ...body,
  },
})

describe('batches on the local stack', () => {
  it('500 lines with 10 bad ones: exact counts, one output line per good custom_id, progress, webhook', async () => {
    const bad = new Map<string, string>()
    const lines = Array.from({ length: 500 }, (_, i) => {
      if (i % 50 !== 7) return chat(i)
      const kind = ((i / 50) % 4) | 0
      const id = `req-${i}`
      if (kind === 0) {
        bad.set(id, 'invalid_value')
        return chat(i, { temperature: 5 })
      }
      if (kind === 1) {
        bad.set(id, 'model_not_found')
        return chat(i, { model: 'no-such-model' })
      }
      if (kind === 2) {
        bad.set(id, 'invalid_url')
        return { ...chat(i), url: '/v1/completions' }
      }
      bad.set(id, 'missing_required_parameter')
      const { messages: _m, ...body } = chat(i).body
      return { ...chat(i), body }
    })
    expect(bad.size).toBe(10)
    const fileId = await upload(`${lines.map((l) => JSON.stringify(l)).join('\n')}\n`)

    const started = Date.now()
    const res = await api('/v1/batches', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        input_file_id: fileId,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { purpose: 'e2e' },
        webhook: receiver.url,
      }),
    })
    expect(res.status).toBe(200)
    const created = (await res.json()) as Batch & { metadata: Record<string, string> }
    expect(created.status).toBe('validating')
    expect(created.metadata).toEqual({ purpose: 'e2e' })

    const seen: Batch['request_counts'][] = []
    const poll = async () => {
      const b = await getBatch(created.id)
      if (b.status === 'in_progress') seen.push(b.request_counts)
      return b
    }
    // Interactive traffic is not queued behind the batch: mid-batch, a chat completion answers at once.
    await waitFor(
      async () => {
        const b = await poll()
        return b.status === 'in_progress' && b.request_counts.completed > 0
      },
      60_000,
      'the batch to make progress',
    )
    const t0 = Date.now()
    const interactive = await api('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat(100_000).body),
    })
    const interactiveMs = Date.now() - t0
    expect(interactive.status).toBe(200)
    const during = await poll()
    expect(during.status).toBe('in_progress')
    expect(during.request_counts.completed).toBeLessThan(490)
    const done = await waitFor(
      async () => {
        const b = await poll()
        return b.status === 'completed' || b.status === 'failed' ? b : null
      },
      90_000,
      'the batch to complete',
    )
    const seconds = (Date.now() - started) / 1000
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 500, completed: 490, failed: 10 })
    expect(done.in_progress_at).not.toBeNull()
    expect(done.finalizing_at).not.toBeNull()
    expect(done.completed_at).not.toBeNull()
    // Progress was visible: counts moved between the first and the last in_progress reads.
    expect(seen.length).toBeGreaterThan(1)
    const progressed = seen.map((c) => c.completed)
    expect(progressed.some((c) => c > 0 && c < 490)).toBe(true)
    expect(progressed).toEqual([...progressed].sort((a, b) => a - b))

    const out = await fileLines(done.output_file_id!)
    expect(out).toHaveLength(490)
    const outIds = out.map((l) => l.custom_id)
    expect(new Set(outIds).size).toBe(490)
    expect(outIds.every((id) => id !== null && !bad.has(id))).toBe(true)
    for (const l of out) {
      expect(l.error).toBeNull()
      expect(l.response?.status_code).toBe(200)
      const body = l.response?.body as {
        object: string
        model: string
        choices: Array<{ message: { content: string } }>
        usage: { completion_tokens: number }
      }
      expect(body.object).toBe('chat.completion')
      expect(body.model).toBe(MODEL)
      expect(body.usage.completion_tokens).toBeLessThanOrEqual(2)
    }
    // Greedy decoding: the same prompt twice in the batch's worker gives what an interactive call gives.
    const one = (await (
      await api('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(chat(3).body),
      })
    ).json()) as { choices: Array<{ message: { content: string } }> }
    const line3 = out.find((l) => l.custom_id === 'req-3')?.response?.body as {
      choices: Array<{ message: { content: string } }>
    }
    expect(line3.choices[0].message.content).toBe(one.choices[0].message.content)

    const errs = await fileLines(done.error_file_id!)
    expect(errs).toHaveLength(10)
    expect(new Set(errs.map((l) => l.custom_id))).toEqual(new Set(bad.keys()))
    for (const l of errs) {
      const code =
        l.error?.code ?? (l.response?.body as { error?: { code?: string } } | undefined)?.error?.code ?? null
      expect(code).toBe(bad.get(l.custom_id!))
      const message =
        l.error?.message ??
        (l.response?.body as { error?: { message?: string } } | undefined)?.error?.message ??
        ''
      expect(message.length).toBeGreaterThan(5)
      if (l.response) expect(l.response.status_code).toBeGreaterThanOrEqual(400)
    }

    // The webhook: one `completed` delivery whose signed body is the finished batch.
    await waitFor(() => receiver.received.length >= 1, 10_000, 'the batch webhook')
    const key = readFileSync(join(h.dir, 'webhook-signing-key'), 'utf8').trim()
    const r = receiver.received[0]
    const hook = new Webhook(tenantWebhookSecret(key, 'acme')).verify(
      r.body,
      r.headers as Record<string, string>,
    ) as Batch
    expect(hook.id).toBe(done.id)
    expect(hook.status).toBe('completed')
    expect(hook.request_counts).toEqual(done.request_counts)
    console.log(
      `500-line batch: ${seconds.toFixed(1)} s, ${seen.length} in_progress reads; ` +
        `an interactive request during it: ${interactiveMs} ms`,
    )
  }, 120_000)

  it('the openai client uploads, creates and polls a batch, and downloads its output', async () => {
    const client = new OpenAI({ apiKey, baseURL: `${edge.url}/v1`, maxRetries: 0 })
    const text = [0, 1, 2, 3, 4]
      .map((i) =>
        JSON.stringify({
          custom_id: `c${i}`,
          method: 'POST',
          url: '/v1/completions',
          body: { model: MODEL, prompt: `Once upon a time ${i}`, max_tokens: 3, temperature: 0 },
        }),
      )
      .join('\n')
    const file = await client.files.create({
      file: await toFile(Buffer.from(text), 'c.jsonl'),
      purpose: 'batch',
    })
    expect(file.purpose).toBe('batch')
    expect((await client.files.retrieve(file.id)).bytes).toBe(Buffer.byteLength(text))
    let batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/completions',
      completion_window: '24h',
    })
    expect(batch.object).toBe('batch')
    batch = await waitFor(
      async () => {
        const b = await client.batches.retrieve(batch.id)
        return b.status === 'completed' ? b : null
      },
      60_000,
      'the batch to complete',
    )
    expect(batch.request_counts).toEqual({ total: 5, completed: 5, failed: 0 })
    expect(batch.error_file_id).toBeNull()
    const content = await (await client.files.content(batch.output_file_id!)).text()
    const rows = content
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as OutputLine)
    expect(rows.map((r) => r.custom_id).sort()).toEqual(['c0', 'c1', 'c2', 'c3', 'c4'])
    expect(
      rows.every((r) => (r.response?.body as { object?: string } | undefined)?.object === 'text_completion'),
    ).toBe(true)
    const listed = await client.batches.list({ limit: 10 })
    expect(listed.data.map((b) => b.id)).toContain(batch.id)
    const files = await client.files.list({ purpose: 'batch_output' })
    expect(files.data.map((f) => f.id)).toContain(batch.output_file_id)
  }, 90_000)
})
