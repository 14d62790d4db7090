/**
 * A batch as the aws profile runs it: an SQS queue (local-aws-sqs here) and
 * object-backed records (PGPT_RECORDS=object) shared by the edge and a
 * worker process. With SQS the batch's chunk jobs go through the main queue
 * and loop, so they must be created in the records that loop reads. (Before
 * core/wiring.ts the batch worker always created them in the local SQLite
 * job store: the loop found no such job, acked each chunk as missing, and
 * the batch never finished.)
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publishBundledModels } from '../../bin/bundled-models.js'
import { parseConfig } from '../../core/config.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'
import { type SqsServer, sqsEnv, startSqsServer } from '../servers/sqs-server.js'

const TOKEN = 'object-records-internal-token-0123'
const MODEL = 'prometheus-mini'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let apiKey: string
let sqs: SqsServer

beforeAll(async () => {
  sqs = await startSqsServer()
  const urls = await sqs.createQueuePair('pgpt-object-records', {
    visibilityTimeoutSeconds: 30,
    maxReceiveCount: 3,
  })
  const shared: Record<string, string> = {
    PGPT_RECORDS: 'object',
    ...sqsEnv(sqs, urls),
    PGPT_VISIBILITY_TIMEOUT_S: '30',
  }
  h = createHarness(shared)
  // The SDK reads credentials from the environment (as the worker process does).
  process.env.AWS_ACCESS_KEY_ID = shared.AWS_ACCESS_KEY_ID
  process.env.AWS_SECRET_ACCESS_KEY = shared.AWS_SECRET_ACCESS_KEY
  const config = parseConfig({
    ...shared,
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
  })
  edge = await startEdge({ config, port: 0 })
  await publishBundledModels(edge.deps.store, join(import.meta.dirname, '../../models'))
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate', 'batch'] }))
    .secret
  worker = await h.startEdgeWorker('generation,batch', edge.url, TOKEN)
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await h?.cleanup()
  await sqs?.stop()
  delete process.env.AWS_ACCESS_KEY_ID
  delete process.env.AWS_SECRET_ACCESS_KEY
})

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, { ...init, headers: { authorization: `Bearer ${apiKey}`, ...init.headers } })

describe('batches with PGPT_RECORDS=object', () => {
  it('completes every line: chunk jobs live in the records the worker loop reads', async () => {
    const lines = Array.from({ length: 4 }, (_, i) => ({
      custom_id: `req-${i}`,
      method: 'POST',
      url: '/v1/completions',
      body: { model: MODEL, prompt: `Number ${i}`, max_tokens: 2, temperature: 0 },
    }))
    const form = new FormData()
    form.set('purpose', 'batch')
    form.set('file', new File([`${lines.map((l) => JSON.stringify(l)).join('\n')}\n`], 'in.jsonl'))
    const up = await api('/v1/files', { method: 'POST', body: form })
    expect(up.status).toBe(200)
    const fileId = ((await up.json()) as { id: string }).id
    const res = await api('/v1/batches', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: fileId, endpoint: '/v1/completions', completion_window: '24h' }),
    })
    expect(res.status).toBe(200)
    const { id } = (await res.json()) as { id: string }
    const done = await waitFor(
      async () => {
        const b = (await (await api(`/v1/batches/${id}`)).json()) as {
          status: string
          request_counts: { total: number; completed: number; failed: number }
        }
        return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : null
      },
      60_000,
      'the batch to finish',
    )
    expect(done.status).toBe('completed')
    expect(done.request_counts).toEqual({ total: 4, completed: 4, failed: 0 })
  }, 90_000)
})
