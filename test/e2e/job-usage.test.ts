/**
 * An async job's usage does not depend on the edge that took it (issue 20
 * item 9: it was recorded by an in-memory waiter on that edge, lost when the
 * edge restarted or its waiter gave up). The worker that runs a job records
 * its usage (workers/generation/usage.ts). Here: the local profile's edge on
 * @hono/node-server over a data folder, a job posted to it, the edge stopped
 * before any worker ran the job, a new edge over the same folder, and a
 * worker PROCESS running the real generation engine on a tiny model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../../core/config.js'
import { silentLogger } from '../../core/logger.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel, publishTestModel } from '../helpers/tiny-models.js'
import { createHarness, type Harness } from '../helpers/worker-process-harness.js'

const TOKEN = 'job-usage-internal-token-0123456'

let h: Harness
let edges: RunningEdge[] = []

beforeAll(() => {
  h = createHarness()
})

afterAll(async () => {
  for (const e of edges) await e.close().catch(() => {})
  await h?.cleanup()
})

describe('the usage of an async job', () => {
  it('is counted once its worker finishes it, though the edge that took it is gone', async () => {
    const config = parseConfig({
      PGPT_DATA_DIR: h.dir,
      PGPT_LOG_LEVEL: 'silent',
      HOST: '127.0.0.1',
      PGPT_INTERNAL_TOKEN: TOKEN,
    })
    // Its follower gives up soon (as the 300 s waiter did, or a frozen Lambda), and the edge stops.
    const first = await startEdge({ config, port: 0, deps: { logger: silentLogger, syncTimeoutMs: 300 } })
    edges.push(first)
    const model = await buildTestModel({ kind: 'random', seed: 7, maxPositions: 128 })
    await publishTestModel(first.deps.store, model, 'tiny-usage')
    const secret = (await createKey(first.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate'] }))
      .secret
    const api = (edge: RunningEdge, path: string, init: RequestInit = {}) =>
      fetch(`${edge.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
      })
    const posted = await api(first, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        model: 'tiny-usage',
        input: { prompt: 'the usage of this job', max_tokens: 12, temperature: 0 },
      }),
    })
    expect(posted.status).toBe(201)
    const { id, status } = (await posted.json()) as { id: string; status: string }
    expect(status).toBe('queued')
    await new Promise((r) => setTimeout(r, 600)) // past the follower's timeout
    await first.close()
    edges = []

    // A new edge over the same data folder; only now does a worker take the job.
    const second = await startEdge({ config, port: 0, deps: { logger: silentLogger } })
    edges.push(second)
    await h.startEdgeWorker('generation', second.url, TOKEN)
    const job = await h.settled(id, 60_000)
    expect(job.state).toBe('succeeded')
    const used = (job.output as { usage: { promptTokens: number; completionTokens: number } }).usage
    expect(used.completionTokens).toBeGreaterThan(0)

    const since = Math.floor(Date.now() / 1000) - 1800
    const res = await api(second, `/v1/usage?start_time=${since}&bucket_width=1d&group_by=model`)
    expect(res.status).toBe(200)
    const page = (await res.json()) as {
      data: Array<{
        results: Array<{
          num_model_requests: number
          input_tokens: number
          output_tokens: number
          model: string
        }>
      }>
    }
    // Read once the job is terminal, no waiting: the worker recorded it before finishing the job.
    expect(page.data.flatMap((b) => b.results)).toEqual([
      expect.objectContaining({
        model: 'tiny-usage',
        num_model_requests: 1,
        input_tokens: used.promptTokens,
        output_tokens: used.completionTokens,
      }),
    ])
  }, 120_000)
})
