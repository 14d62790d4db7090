/**
 * A worker killed (SIGKILL) in the middle of a batch loses and duplicates
 * nothing: the chunks it held come back after the visibility timeout, a
 * second worker process takes them over, skips the lines whose results were
 * already written (create-once), and the batch completes with exactly one
 * output line per custom_id. Real edge, real worker processes, the bundled
 * model.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishBundledModels } from '../../bin/bundled-models.js'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { listResults } from '../../core/records/batches.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'batches-crash-token-0123456789'
const MODEL = 'prometheus-mini'
const LINES = 300
let h: Harness
let edge: RunningEdge
let apiKey: string

beforeAll(async () => {
  h = createHarness()
  edge = await startEdge({
    config: parseConfig({
      // These tests poll; rate limits have their own tests.
      PGPT_RATE_LIMIT_RPM: '1000000',
      PGPT_DATA_DIR: h.dir,
      PGPT_LOG_LEVEL: 'silent',
      HOST: '127.0.0.1',
      PGPT_INTERNAL_TOKEN: TOKEN,
    }),
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  await publishBundledModels(edge.deps.store, join(import.meta.dirname, '../../models'))
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['batch'] })).secret
}, 60_000)

afterAll(async () => {
  await edge?.close()
  await h?.cleanup()
})

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, { ...init, headers: { authorization: `Bearer ${apiKey}`, ...init.headers } })

const spawn = () =>
  h.spawnWorker({
    PGPT_WORKER_KINDS: 'batch',
    PGPT_EDGE_URL: edge.url,
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_MODEL_CACHE_DIR: join(h.dir, 'model-cache'),
  })

interface Batch {
  id: string
  status: string
  request_counts: { total: number; completed: number; failed: number }
  output_file_id: string | null
  error_file_id: string | null
}

describe('a worker killed mid-batch', () => {
  it('loses no line and duplicates none', async () => {
    const text = Array.from({ length: LINES }, (_, i) =>
      JSON.stringify({
        custom_id: `line-${i}`,
        method: 'POST',
        url: '/v1/completions',
        body: { model: MODEL, prompt: `The story of ${i} is`, max_tokens: 4, temperature: 0 },
      }),
    ).join('\n')
    const form = new FormData()
    form.set('purpose', 'batch')
    form.set('file', new File([text], 'in.jsonl'))
    const fileId = ((await (await api('/v1/files', { method: 'POST', body: form })).json()) as { id: string })
      .id
    const created = (await (
      await api('/v1/batches', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          input_file_id: fileId,
          endpoint: '/v1/completions',
          completion_window: '24h',
        }),
      })
    ).json()) as Batch
    const get = async () => (await (await api(`/v1/batches/${created.id}`)).json()) as Batch

    const first = spawn()
    // Kill it once some lines are written but well before the end.
    const resultsNow = async () => (await listResults(edge.deps.store, 'acme', created.id)).size
    const before = await waitFor(
      async () => {
        const n = await resultsNow()
        return n >= 20 ? n : null
      },
      60_000,
      'some lines to be done',
    )
    first.kill('SIGKILL')
    const killed = await first.exited
    expect(killed.signal).toBe('SIGKILL')
    const atKill = await get()
    expect(atKill.status).toBe('in_progress')
    expect(before).toBeLessThan(LINES)

    const second = spawn()
    const done = await waitFor(
      async () => {
        const b = await get()
        return b.status === 'completed' || b.status === 'failed' ? b : null
      },
      90_000,
      'the batch to complete after the restart',
    )
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: LINES, completed: LINES, failed: 0 })
    expect(done.error_file_id).toBeNull()
    const out = (await (await api(`/v1/files/${done.output_file_id}/content`)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { custom_id: string; response: { status_code: number } })
    expect(out).toHaveLength(LINES)
    expect(new Set(out.map((l) => l.custom_id)).size).toBe(LINES)
    expect(out.every((l) => l.response.status_code === 200)).toBe(true)
    // The second worker took over the chunks the first one held.
    expect(
      second.logs.some((l) => l.msg === 'job was left running by a worker that lost it; taking over'),
    ).toBe(true)
    const resumed = second.logs.filter((l) => l.msg === 'chunk resumed: skipping lines already done')
    console.log(
      `killed with ${before} of ${LINES} lines done; ${resumed.length} chunk(s) resumed skipping ${resumed
        .map((l) => l.alreadyDone)
        .join('+')} line(s)`,
    )
    second.kill('SIGTERM')
    expect((await second.exited).code).toBe(0)
  }, 150_000)
})
