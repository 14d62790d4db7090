/**
 * End-to-end harness: runs real worker processes (`node --import tsx
 * workers/main.ts`) over a real local data folder (SQLite queue, job store and
 * delivery log in `<dir>/pgpt.db`), and plays the edge's part: it creates job
 * records and enqueues them through the same adapters.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { openLocalQueue } from '../../core/adapters/local-queue.js'
import { SqliteJobStore } from '../../core/adapters/sqlite-job-store.js'
import type { JobRecord, NewJob } from '../../core/ports/job-store.js'
import type { QueueWithDeadLetter } from '../../core/ports/queue.js'
import { JOBS_QUEUE } from '../../core/wiring.js'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')

export interface WorkerChild {
  proc: ChildProcess
  logs: Array<Record<string, unknown>>
  stderr: string[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  waitForLog(
    pred: (l: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>
  kill(signal: NodeJS.Signals): void
}

export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<T>
    if (Date.now() > end) throw new Error(`waitFor: timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export interface Harness {
  dir: string
  dbFile: string
  jobs: SqliteJobStore
  queues: QueueWithDeadLetter
  baseEnv: Record<string, string>
  enqueue(job: NewJob): Promise<JobRecord>
  spawnWorker(env?: Record<string, string>): WorkerChild
  /**
   * A worker process running `kinds` (PGPT_WORKER_KINDS) that publishes its
   * events to the edge at `edgeUrl` with `token`, its model cache in the
   * harness folder; resolves once it logged 'worker started'.
   */
  startEdgeWorker(
    kinds: string,
    edgeUrl: string,
    token: string,
    env?: Record<string, string>,
  ): Promise<WorkerChild>
  settled(id: string, timeoutMs?: number): Promise<JobRecord>
  cleanup(): Promise<void>
}

export function createHarness(env: Record<string, string> = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'pgpt-e2e-'))
  const dbFile = join(dir, 'pgpt.db')
  const baseEnv: Record<string, string> = {
    PGPT_PROFILE: 'local',
    PGPT_DATA_DIR: dir,
    PGPT_LOG_LEVEL: 'debug',
    PGPT_VISIBILITY_TIMEOUT_S: '5',
    PGPT_MAX_RECEIVE_COUNT: '3',
    PGPT_SHUTDOWN_GRACE_S: '5',
    PGPT_WORKER_CONCURRENCY: '2',
    PGPT_WORKER_WAIT_S: '1',
    PGPT_WORKER_KINDS: 'none',
    PGPT_HANDLER_MODULES: 'test/helpers/test-handlers.ts',
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
    PGPT_WEBHOOK_RETRY_SCHEDULE_MS: '200,200,200',
    PGPT_WEBHOOK_TIMEOUT_MS: '2000',
    PGPT_DEAD_LETTER_INTERVAL_S: '1',
    PGPT_WORKER_RETRY_BASE_S: '0',
    ...env,
  }
  const jobs = new SqliteJobStore({ file: dbFile })
  const queues = openLocalQueue({
    file: dbFile,
    name: JOBS_QUEUE,
    visibilityTimeoutSeconds: Number(baseEnv.PGPT_VISIBILITY_TIMEOUT_S),
    maxReceiveCount: Number(baseEnv.PGPT_MAX_RECEIVE_COUNT),
  })
  const children: WorkerChild[] = []

  return {
    dir,
    dbFile,
    jobs,
    queues,
    baseEnv,
    async enqueue(job) {
      const rec = await jobs.create(job)
      await queues.queue.send(JSON.stringify({ jobId: rec.id, kind: rec.kind, requestId: rec.requestId }))
      return rec
    },
    async startEdgeWorker(kinds, edgeUrl, token, env = {}) {
      const worker = this.spawnWorker({
        PGPT_WORKER_KINDS: kinds,
        PGPT_EDGE_URL: edgeUrl,
        PGPT_INTERNAL_TOKEN: token,
        PGPT_MODEL_CACHE_DIR: join(dir, 'model-cache'),
        ...env,
      })
      await worker.waitForLog((l) => l.msg === 'worker started', 30_000)
      return worker
    },
    spawnWorker(extra = {}) {
      const { PGPT_API_KEY: _k, ...parentEnv } = process.env
      const proc = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts'], {
        cwd: ROOT,
        env: { ...parentEnv, ...baseEnv, ...extra },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      const logs: Array<Record<string, unknown>> = []
      const stderr: string[] = []
      let buf = ''
      proc.stdout?.on('data', (c: Buffer) => {
        buf += c.toString('utf8')
        let nl = buf.indexOf('\n')
        while (nl >= 0) {
          const line = buf.slice(0, nl)
          buf = buf.slice(nl + 1)
          try {
            logs.push(JSON.parse(line))
          } catch {
            logs.push({ raw: line })
          }
          nl = buf.indexOf('\n')
        }
      })
      proc.stderr?.on('data', (c: Buffer) => stderr.push(c.toString('utf8')))
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
        proc.on('exit', (code, signal) => res({ code, signal })),
      )
      const child: WorkerChild = {
        proc,
        logs,
        stderr,
        exited,
        waitForLog: (pred, timeoutMs = 15_000) =>
          waitFor(() => logs.find(pred), timeoutMs, 'a log line').catch((err) => {
            throw new Error(
              `${err.message}\nstderr: ${stderr.join('')}\nlast logs: ${JSON.stringify(logs.slice(-5))}`,
            )
          }),
        kill: (signal) => proc.kill(signal),
      }
      children.push(child)
      return child
    },
    settled: (id, timeoutMs = 20_000) =>
      waitFor(
        async () => {
          const j = await jobs.getById(id)
          return j && ['succeeded', 'failed', 'canceled'].includes(j.state) ? j : null
        },
        timeoutMs,
        `job ${id} to finish`,
      ),
    async cleanup() {
      for (const c of children)
        if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
      await Promise.all(children.map((c) => c.exited))
      await queues.queue.close?.()
      await jobs.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
