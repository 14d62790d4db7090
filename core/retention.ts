/**
 * Retention: what expires, and the one sweep that deletes it. Runtime-neutral
 * and over the ports only, so every profile runs the same code:
 *
 * - AWS: functions/cleanup.ts, a Lambda that sst.config.ts runs every hour;
 * - the edge on Node (`npm start`, compose): startSweeper() every
 *   PGPT_CLEANUP_INTERVAL_S (edge/node.ts), one edge per stack;
 * - Cloudflare: the Worker's `scheduled` handler (edge/worker.ts, a cron in
 *   wrangler.jsonc).
 *
 * What is written, and where (the records carry the expiry, so every store,
 * fs, S3, R2 or memory, honours it alike; no object tags or lifecycle rules):
 *
 * - files: `expires_at` in the file record (core/records/files.ts), from the
 *   upload's `expires_after` or the purpose's default
 *   (PGPT_BATCH_FILE_RETENTION_DAYS, PGPT_FINE_TUNE_FILE_RETENTION_DAYS); a
 *   batch's output and error files from its `output_expires_after` or the
 *   batch default. An expired file reads as missing at once; the sweep
 *   deletes its bytes and record.
 * - batch data (chunks, per-line results, core/records/batches.ts): deleted
 *   once the batch has ended (plus a grace period).
 * - job records (and the outputs in them): deleted PGPT_JOB_RETENTION_DAYS
 *   after the job finished; fine-tuning jobs are kept (the Fine-tuning API
 *   lists them for ever, as OpenAI does).
 *
 *   const result = await sweepExpired({ store, jobs, logger }, retentionPolicy(config))
 */
import type { Config } from './config.js'
import type { Logger } from './logger.js'
import type { JobStore } from './ports/job-store.js'
import type { ObjectStore } from './ports/object-store.js'
import { BATCH_DATA_GRACE_MS, sweepBatchData } from './records/batches.js'
import { type FilePurpose, sweepExpiredFiles } from './records/files.js'
import { FINE_TUNE_KIND } from './records/fine-tunes.js'

const DAY_S = 86_400

type RetentionConfig = Pick<
  Config,
  'PGPT_BATCH_FILE_RETENTION_DAYS' | 'PGPT_FINE_TUNE_FILE_RETENTION_DAYS' | 'PGPT_JOB_RETENTION_DAYS'
>

/** Seconds a new file of `purpose` lives when the request sets no expiry; null: it never expires. */
export function defaultFileExpiresAfterS(config: RetentionConfig, purpose: FilePurpose): number | null {
  const days =
    purpose === 'fine-tune'
      ? config.PGPT_FINE_TUNE_FILE_RETENTION_DAYS
      : config.PGPT_BATCH_FILE_RETENTION_DAYS
  return days > 0 ? days * DAY_S : null
}

export interface RetentionPolicy {
  /** Days a finished job's record is kept; 0: for ever. */
  jobRetentionDays: number
  /** Job kinds never deleted. */
  keepJobKinds: readonly string[]
  /** How long a finished batch's chunks and results are kept, ms. */
  batchDataGraceMs: number
}

export function retentionPolicy(config: Pick<Config, 'PGPT_JOB_RETENTION_DAYS'>): RetentionPolicy {
  return {
    jobRetentionDays: config.PGPT_JOB_RETENTION_DAYS,
    keepJobKinds: [FINE_TUNE_KIND],
    batchDataGraceMs: BATCH_DATA_GRACE_MS,
  }
}

export interface SweepDeps {
  store: ObjectStore
  /** The job records; absent where the sweep has none to reach (they are swept where they live). */
  jobs?: JobStore
  logger?: Logger
}

export interface SweepOptions extends Partial<RetentionPolicy> {
  /** Epoch ms. Default Date.now(). */
  now?: number
  /** Most deletions of each kind (files, batch data objects, jobs) per sweep; the next sweep goes on. Default 1000. */
  limit?: number
}

export interface SweepResult {
  /** `<tenant>/<file id>` of the files deleted. */
  files: string[]
  /** `<tenant>/<batch id>` of the batches whose data was deleted. */
  batches: string[]
  /** Chunk and result objects deleted. */
  batchObjects: number
  /** Ids of the job records deleted. */
  jobs: string[]
  /** True when a part stopped at its limit: more is due, and the next sweep deletes it. */
  truncated: boolean
}

/** One sweep: expired files, finished batches' data and old finished jobs. Idempotent; safe to run in several places at once. */
export async function sweepExpired(deps: SweepDeps, o: SweepOptions = {}): Promise<SweepResult> {
  const now = o.now ?? Date.now()
  const limit = o.limit ?? 1000
  const files = await sweepExpiredFiles(deps.store, { now, limit })
  const data = await sweepBatchData(deps.store, {
    now,
    graceMs: o.batchDataGraceMs ?? BATCH_DATA_GRACE_MS,
    limit: limit * 10, // chunks and results are many small objects per batch
  })
  const days = o.jobRetentionDays ?? 0
  const jobs =
    deps.jobs && days > 0
      ? await deps.jobs.purgeFinished({
          finishedBefore: now - days * DAY_S * 1000,
          keepKinds: o.keepJobKinds ?? [FINE_TUNE_KIND],
          limit,
        })
      : []
  return {
    files: files.deleted,
    batches: data.batches,
    batchObjects: data.objects,
    jobs,
    truncated: files.more || data.more || jobs.length >= limit,
  }
}

export interface Sweeper {
  /** Runs one sweep now (waits for a running one first). */
  runNow(): Promise<SweepResult | undefined>
  /** Stops the timer and waits for a running sweep. */
  stop(): Promise<void>
}

export interface SweeperOptions extends Omit<SweepOptions, 'now'> {
  intervalMs: number
  /** Delay of the first sweep. Default min(intervalMs, 60 s): a stack that is up for minutes at a time still sweeps. */
  firstDelayMs?: number
  /** Epoch ms now; tests pass their own clock. */
  clock?: () => number
}

/**
 * Sweeps every `intervalMs` in this process (timers unref'd: they never keep
 * it alive). A failed sweep is logged and the next one tries again; sweeps
 * never overlap.
 */
export function startSweeper(deps: SweepDeps, o: SweeperOptions): Sweeper {
  if (!(o.intervalMs > 0)) throw new Error('startSweeper: intervalMs must be > 0')
  const { intervalMs, firstDelayMs, clock, ...options } = o
  let running: Promise<SweepResult | undefined> | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = false
  const sweep = async (): Promise<SweepResult | undefined> => {
    try {
      const r = await sweepExpired(deps, { ...options, now: clock?.() })
      if (r.files.length || r.batchObjects || r.jobs.length)
        deps.logger?.info(
          {
            files: r.files.length,
            batches: r.batches.length,
            batchObjects: r.batchObjects,
            jobs: r.jobs.length,
            truncated: r.truncated,
          },
          'retention sweep deleted expired data',
        )
      return r
    } catch (err) {
      deps.logger?.warn({ err }, 'retention sweep failed; the next one retries')
      return undefined
    }
  }
  const runNow = async () => {
    while (running) await running
    running = sweep()
    try {
      return await running
    } finally {
      running = undefined
    }
  }
  const schedule = (ms: number) => {
    if (stopped) return
    timer = setTimeout(() => {
      void runNow().finally(() => schedule(intervalMs))
    }, ms)
    timer.unref?.()
  }
  schedule(firstDelayMs ?? Math.min(intervalMs, 60_000))
  return {
    runNow,
    async stop() {
      stopped = true
      if (timer) clearTimeout(timer)
      await running
    },
  }
}
