/**
 * The official `openai` client (v6) against the edge on @hono/node-server,
 * over the local profile's real adapters (SQLite queue and job store, folder
 * object store, SQLite keys and usage) with the echo worker test double answering jobs.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../core/config.js'
import { manifestKey } from '../core/model-manifest.js'
import { startEchoWorker } from '../test/helpers/echo-worker.js'
import { manifest } from '../test/helpers/edge-harness.js'
import { createKey } from './keys.js'
import { type RunningEdge, startEdge } from './node.js'

let dir: string
let edge: RunningEdge
let worker: ReturnType<typeof startEchoWorker>
let client: OpenAI
const BOOT_KEY = 'pgpt_bootstrapkeyfortests0001'

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-edge-'))
  const config = parseConfig({
    PGPT_DATA_DIR: dir,
    PGPT_LOG_LEVEL: 'silent',
    PGPT_API_KEY: BOOT_KEY,
    HOST: '127.0.0.1',
  })
  edge = await startEdge({ config, port: 0 })
  await edge.deps.store.put(manifestKey('echo-1'), JSON.stringify(manifest('echo-1', null)))
  worker = startEchoWorker({
    queue: edge.deps.queue,
    jobs: edge.deps.jobs,
    events: edge.deps.events,
    usage: edge.deps.usage,
  })
  const { secret } = await createKey(edge.deps.keys, { tenant: 't1', name: 'sdk', scopes: ['generate'] })
  client = new OpenAI({ apiKey: secret, baseURL: `${edge.url}/v1`, maxRetries: 0 })
})

afterAll(async () => {
  await worker?.stop()
  await edge?.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('the openai client against the Node edge', () => {
  it('runs on the SQLite queue and job store and the folder store', () => {
    expect(edge.deps.queue.name).toBe('generation')
    expect(edge.deps.jobs.constructor.name).toBe('SqliteJobStore')
    expect(edge.deps.store.constructor.name).toBe('FsObjectStore')
    expect(edge.deps.keys.constructor.name).toBe('SqliteKeyStore')
    expect(edge.deps.usage.constructor.name).toBe('SqliteUsageStore')
  })

  it('lists models', async () => {
    const page = await client.models.list()
    expect(page.data.map((m) => m.id)).toEqual(['echo-1'])
    expect((await client.models.retrieve('echo-1')).id).toBe('echo-1')
  })

  it('creates a completion', async () => {
    const res = await client.completions.create({ model: 'echo-1', prompt: 'one two three', max_tokens: 5 })
    expect(res.choices[0]!.text).toBe('three two one')
    expect(res.choices[0]!.finish_reason).toBe('stop')
    expect(res.usage).toEqual({ prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 })
  })

  it('creates a chat completion and exposes the headers', async () => {
    const { data, response } = await client.chat.completions
      .create({
        model: 'echo-1',
        messages: [{ role: 'user', content: 'hello brave new world' }],
        max_tokens: 2,
      })
      .withResponse()
    expect(data.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'world new' })
    expect(data.choices[0]!.finish_reason).toBe('length')
    expect(response.headers.get('x-request-id')).toMatch(/^req_/)
    expect(response.headers.get('x-ratelimit-limit-requests')).toBe('600')
    expect(Number(response.headers.get('openai-processing-ms'))).toBeGreaterThanOrEqual(0)
    const job = await edge.deps.jobs.getById(data.id.replace('chatcmpl-', ''))
    expect(job?.requestId).toBe(response.headers.get('x-request-id'))
  })

  it('streams a chat completion with include_usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'echo-1',
      messages: [{ role: 'user', content: 'a b c d' }],
      stream: true,
      stream_options: { include_usage: true },
    })
    let text = ''
    let finish: string | null = null
    let usageChunk: OpenAI.CompletionUsage | null | undefined
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        text += ch.delta.content ?? ''
        finish = ch.finish_reason ?? finish
      }
      if (chunk.usage) usageChunk = chunk.usage
    }
    expect(text).toBe('d c b a')
    expect(finish).toBe('stop')
    expect(usageChunk).toMatchObject({ completion_tokens: 4 })
  })

  it('streams a completion without usage, and usage is still recorded', async () => {
    const requests = async () =>
      (
        await edge.deps.usage.query({
          tenant: 't1',
          from: 0,
          to: Date.now() + 60_000,
          bucketSeconds: 86_400 * 365,
        })
      )
        .map((b) => b.requests)
        .reduce((a, b) => a + b, 0)
    const before = await requests()
    const stream = await client.completions.create({ model: 'echo-1', prompt: 'x y z', stream: true })
    const parts: string[] = []
    for await (const chunk of stream) {
      expect(chunk.usage ?? undefined).toBeUndefined()
      parts.push(...chunk.choices.map((c) => c.text))
    }
    expect(parts.join('')).toBe('z y x')
    await expect.poll(requests).toBe(before + 1)
  })

  it('raises the SDK’s typed errors', async () => {
    await expect(
      client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    ).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    await expect(
      client.chat.completions.create({
        model: 'echo-1',
        messages: [{ role: 'user', content: 'x' }],
        temperature: 9,
      }),
    ).rejects.toMatchObject({ status: 400, param: 'temperature' })
    const bad = new OpenAI({
      apiKey: 'pgpt_notarealkeynotarealkey',
      baseURL: `${edge.url}/v1`,
      maxRetries: 0,
    })
    await expect(bad.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError)
  })

  it('registered PGPT_API_KEY at boot as an admin key', async () => {
    const admin = new OpenAI({ apiKey: BOOT_KEY, baseURL: `${edge.url}/v1`, maxRetries: 0 })
    const keys = (await admin.get('/admin/keys')) as { data: { name: string; scopes: string[] }[] }
    expect(keys.data.find((k) => k.name === 'bootstrap')?.scopes).toContain('admin')
  })
})
