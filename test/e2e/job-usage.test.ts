/**
 * An async job's usage does not depend on the edge that took it (issue 20
 * item 9: it was recorded by an in-memory waiter on that edge, lost when the
 * edge restarted or its waiter gave up). The worker that runs a job records
 * its usage (workers/generation/usage.ts). Here, in the local profile and in
 * the aws one: the edge on @hono/node-server, a job posted to it, the edge
 * stopped before any worker ran the job, a new edge over the same records,
 * and a worker PROCESS running the real generation engine on a tiny model.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../../core/config.js'
import { silentLogger } from '../../core/logger.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { buildTestModel, publishTestModel } from '../helpers/tiny-models.js'
import { createHarness, type Harness, waitFor } from '../helpers/worker-process-harness.js'
import { type SqsServer, sqsEnv, startSqsServer } from '../servers/sqs-server.js'

const TOKEN = 'job-usage-internal-token-0123456'

const cleanups: Array<() => Promise<unknown>> = []

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {})
})

/**
 * Posts an async job to an edge whose follower gives up soon (as the 300 s
 * waiter did, or a frozen Lambda) and that stops before any worker runs the
 * job; then a new edge over the same records, and a worker. Returns the
 * finished job and the tenant's usage as the new edge reads it at once.
 */
async function jobOfAGoneEdge(profile: Record<string, string>) {
  const h: Harness = createHarness(profile)
  cleanups.push(() => h.cleanup())
  const config = parseConfig({
    ...profile,
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
  })
  const first = await startEdge({ config, port: 0, deps: { logger: silentLogger, syncTimeoutMs: 300 } })
  cleanups.push(() => first.close())
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

  // A new edge over the same records; only now does a worker take the job.
  const second = await startEdge({ config, port: 0, deps: { logger: silentLogger } })
  cleanups.push(() => second.close())
  const worker = await h.startEdgeWorker('generation', second.url, TOKEN)
  cleanups.push(async () => {
    worker.kill('SIGTERM')
    await worker.exited
  })
  const job: JobRecord = await waitFor(
    async () => {
      const j = await second.deps.jobs.getById(id)
      return j && ['succeeded', 'failed', 'canceled'].includes(j.state) ? j : null
    },
    60_000,
    `job ${id} to finish`,
  )
  const since = Math.floor(Date.now() / 1000) - 1800
  const res = await api(second, `/v1/usage?start_time=${since}&bucket_width=1d&group_by=model`)
  expect(res.status).toBe(200)
  const page = (await res.json()) as { data: Array<{ results: Array<Record<string, unknown>> }> }
  return { job, results: page.data.flatMap((b) => b.results) }
}

/** The job succeeded, and its usage was read once it was terminal, with no waiting: the worker recorded it first. */
function expectCountedOnce({ job, results }: Awaited<ReturnType<typeof jobOfAGoneEdge>>) {
  expect(job.state).toBe('succeeded')
  const used = (job.output as { usage: { promptTokens: number; completionTokens: number } }).usage
  expect(used.completionTokens).toBeGreaterThan(0)
  expect(results).toEqual([
    expect.objectContaining({
      model: 'tiny-usage',
      num_model_requests: 1,
      input_tokens: used.promptTokens,
      output_tokens: used.completionTokens,
    }),
  ])
}

describe('the usage of an async job whose edge is gone is counted once its worker finishes it', () => {
  it('local profile: SQLite records shared by the edge and the worker process', async () => {
    expectCountedOnce(await jobOfAGoneEdge({}))
  }, 120_000)

  it('aws profile: SQS (local-aws-sqs) and object records (PGPT_RECORDS=object)', async () => {
    const sqs: SqsServer = await startSqsServer()
    cleanups.push(() => sqs.stop())
    const urls = await sqs.createQueuePair('pgpt-job-usage', {
      visibilityTimeoutSeconds: 30,
      maxReceiveCount: 3,
    })
    // The SDK reads credentials from the environment (as the worker process does).
    process.env.AWS_ACCESS_KEY_ID = sqs.credentials.accessKeyId
    process.env.AWS_SECRET_ACCESS_KEY = sqs.credentials.secretAccessKey
    cleanups.push(async () => {
      delete process.env.AWS_ACCESS_KEY_ID
      delete process.env.AWS_SECRET_ACCESS_KEY
    })
    expectCountedOnce(
      await jobOfAGoneEdge({ PGPT_RECORDS: 'object', ...sqsEnv(sqs, urls), PGPT_VISIBILITY_TIMEOUT_S: '30' }),
    )
  }, 120_000)
})
