/**
 * The worker image's entry, run as the image runs it: the CMD of
 * workers/Dockerfile (`node --import tsx workers/main.ts`) as a child process,
 * with the image's ENV, configured for the cloud adapters: jobs from SQS
 * (local-aws-sqs, test/servers/sqs-server.ts) and the model from S3 (s3rver,
 * test/servers/s3-server.ts). It completes a generation job (the model exists
 * only in the bucket, so the right text proves the S3 path) and a test job,
 * answers the image's HEALTHCHECK command, and drains on SIGTERM with exit 0.
 *
 * Job records stay in the worker's SQLite file in PGPT_DATA_DIR: the worker
 * process (workers/worker-process.ts) does not read PGPT_RECORDS yet.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SqliteJobStore } from '../../core/adapters/sqlite-job-store.js'
import { createSqsQueue } from '../../core/adapters/sqs-queue.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import type { QueueWithDeadLetter } from '../../core/ports/queue.js'
import { buildTestModel, byteChain, publishTestModel } from '../helpers/tiny-models.js'
import { type S3Server, s3StoreOf, startS3Server } from '../servers/s3-server.js'
import { type SqsServer, startSqsServer } from '../servers/sqs-server.js'
import { execForm, readDockerfile, stageEnv } from './dockerfile.js'

const ROOT = resolve(import.meta.dirname, '../..')
const CHAIN_TEXT = 'Fire-S3ok!' // every byte once: the chain model's rule

const { stages } = readDockerfile(resolve(ROOT, 'workers/Dockerfile'))
const image = stages.at(-1)!
const cmd = execForm(image.instructions.find((i) => i.op === 'CMD')!.args)
const healthcheck = execForm(image.instructions.find((i) => i.op === 'HEALTHCHECK')!.args)

async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as { port: number }
  await new Promise((r) => srv.close(r))
  return port
}

const waitFor = async <T>(
  fn: () => Promise<T | null | undefined> | T | null | undefined,
  ms: number,
  what: string,
) => {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('worker image entry over SQS and S3', () => {
  let sqs: SqsServer
  let s3: S3Server
  let dir: string
  let queues: QueueWithDeadLetter
  let jobs: SqliteJobStore
  let child: ChildProcess | undefined
  let queueUrls: { queueUrl: string; deadLetterQueueUrl: string }
  const output: string[] = []

  beforeAll(async () => {
    ;[sqs, s3, dir] = await Promise.all([
      startSqsServer(),
      startS3Server(),
      mkdtemp(join(tmpdir(), 'pgpt-image-')),
    ])
    const urls = await sqs.createQueuePair('pgpt-image-jobs', {
      visibilityTimeoutSeconds: 30,
      maxReceiveCount: 3,
    })
    queues = createSqsQueue({
      queueUrl: urls.queueUrl,
      deadLetterQueueUrl: urls.deadLetterQueueUrl,
      region: sqs.region,
      endpoint: sqs.endpoint,
      credentials: sqs.credentials,
      visibilityTimeoutSeconds: 30,
      maxReceiveCount: 3,
    })
    const store = s3StoreOf(s3)
    const base = await buildTestModel({ kind: 'random', seed: 3 })
    const chain = await buildTestModel({
      kind: 'chain',
      chain: [base.byteToken(0x3e), ...byteChain(base, CHAIN_TEXT), base.eosTokenId],
    })
    await publishTestModel(store, chain, 'chain-s3')
    jobs = new SqliteJobStore({ file: join(dir, 'data', 'pgpt.db') })
    queueUrls = urls
  })

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL')
    await jobs?.close()
    await queues?.queue.close?.()
    await sqs?.stop()
    await s3?.stop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('runs CMD with the image ENV, completes jobs, passes HEALTHCHECK, exits 0 on SIGTERM', async () => {
    const urls = queueUrls
    const port = await freePort()
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? dir,
      ...stageEnv(image), // as the image sets them, then what a deployment sets:
      PGPT_DATA_DIR: join(dir, 'data'),
      PGPT_MODEL_CACHE_DIR: join(dir, 'models'),
      PGPT_WORKER_METRICS_PORT: String(port),
      PGPT_WORKER_METRICS_HOST: '127.0.0.1',
      PGPT_LOG_LEVEL: 'info',
      PGPT_QUEUE: 'sqs',
      PGPT_SQS_QUEUE_URL: urls.queueUrl,
      PGPT_SQS_DLQ_URL: urls.deadLetterQueueUrl,
      PGPT_SQS_ENDPOINT: sqs.endpoint,
      PGPT_STORE: 's3',
      PGPT_S3_BUCKET: s3.bucket,
      PGPT_S3_ENDPOINT: s3.endpoint,
      PGPT_S3_FORCE_PATH_STYLE: 'true',
      AWS_REGION: s3.region,
      AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, // s3rver checks these; local-aws-sqs takes any
      AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
      PGPT_VISIBILITY_TIMEOUT_S: '30',
      PGPT_MAX_RECEIVE_COUNT: '3',
      PGPT_WEBHOOK_SIGNING_KEY: 'k'.repeat(40),
      PGPT_WORKER_WAIT_S: '1',
      PGPT_WORKER_KINDS: 'generation',
      PGPT_HANDLER_MODULES: join(ROOT, 'test/helpers/test-handlers.ts'),
    }
    expect(env.PGPT_PROFILE).toBe('onprem')
    expect(cmd[0]).toBe('node')
    child = spawn(process.execPath, cmd.slice(1), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout?.on('data', (c: Buffer) => output.push(c.toString('utf8')))
    child.stderr?.on('data', (c: Buffer) => output.push(c.toString('utf8')))
    const exited = new Promise<number | null>((r) => child!.on('exit', (code) => r(code)))

    const enqueue = async (job: Parameters<SqliteJobStore['create']>[0]) => {
      const rec = await jobs.create(job)
      await queues.queue.send(JSON.stringify({ jobId: rec.id, kind: rec.kind }))
      return rec
    }
    const sampling = {
      maxTokens: 40,
      temperature: 0,
      topP: 1,
      topK: 0,
      presencePenalty: 0,
      frequencyPenalty: 0,
      repetitionPenalty: 1,
      stop: [],
      n: 1,
      logprobs: null,
    }
    const gen = await enqueue({
      tenant: 'acme',
      kind: 'generation',
      model: 'chain-s3',
      input: {
        endpoint: 'completions',
        model: 'chain-s3',
        prompt: '>',
        sampling,
        stream: false,
        echo: false,
      },
    })
    const sleep = await enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 50, output: { ok: true } },
    })

    const settled = (id: string) =>
      waitFor(
        async () => {
          const j = await jobs.getById(id)
          return j && ['succeeded', 'failed', 'canceled'].includes(j.state) ? j : null
        },
        60_000,
        `job ${id}; worker output:\n${output.join('').slice(-3000)}`,
      )
    const [g, s] = (await Promise.all([settled(gen.id), settled(sleep.id)])) as [JobRecord, JobRecord]
    expect(g.error).toBeUndefined()
    expect(g.state).toBe('succeeded')
    expect((g.output as { choices: Array<{ text: string }> }).choices[0].text).toBe(CHAIN_TEXT)
    expect(s).toMatchObject({ state: 'succeeded', output: { ok: true }, attempts: 1 })

    // The image's HEALTHCHECK command, as Docker would run it in the container.
    expect(healthcheck.slice(0, 2)).toEqual(['node', '-e'])
    execFileSync(process.execPath, healthcheck.slice(1), { env, timeout: 10_000 })

    // Both messages were acknowledged.
    await waitFor(
      async () => {
        const st = await queues.queue.stats()
        return st.visible === 0 && st.inFlight === 0
      },
      10_000,
      'an empty queue',
    )

    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    const closed = String(await new Promise((r) => setTimeout(() => r(output.join('')), 10)))
    expect(closed).toMatch(/worker process stopped/)
    // The health probe fails once the worker is gone.
    expect(() =>
      execFileSync(process.execPath, healthcheck.slice(1), { env, timeout: 10_000, stdio: 'ignore' }),
    ).toThrow()
  })
})
