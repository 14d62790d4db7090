/**
 * Settings only the worker process reads, beside core/config.ts (which holds
 * everything the edge and worker share). Same rules: environment variables,
 * validated with zod, a bad value stops start-up naming the variable.
 */
import { z } from 'zod'
import { ConfigError, type ConfigSource } from '../core/config.js'
import { SVIX_SCHEDULE_MS } from './webhooks/dispatcher.js'

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max)
const msList = z
  .string()
  .transform((s) => s.split(',').map((p) => Number(p.trim())))
  .pipe(z.array(z.number().int().min(0)).min(1))

export const workerSettingsSchema = z.object({
  /** Port of the worker's /metrics and /health server; unset: no server; 0: any free port (logged). */
  PGPT_WORKER_METRICS_PORT: int(0, 65535).optional(),
  /** Interface of that server. Default 127.0.0.1 in the local profile, else 0.0.0.0. */
  PGPT_WORKER_METRICS_HOST: z.string().min(1).optional(),
  /** Waits before webhook retries 1, 2, …, ms, comma-separated. Default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. */
  PGPT_WEBHOOK_RETRY_SCHEDULE_MS: msList.default(SVIX_SCHEDULE_MS),
  /** How often the dead-letter queue is drained, seconds; 0: never (another process does it). */
  PGPT_DEAD_LETTER_INTERVAL_S: int(0, 86_400).default(30),
  /** Backoff of transient job failures: first wait and cap, seconds. */
  PGPT_WORKER_RETRY_BASE_S: int(0, 43_200).default(2),
  PGPT_WORKER_RETRY_MAX_S: int(0, 43_200).default(900),
  /** Delay before a message this worker cannot run (no handler for its kind, unparseable) is visible again, seconds. */
  PGPT_WORKER_UNHANDLED_DELAY_S: int(0, 900).default(5),
  /**
   * After a job's signal fired (cancel, shutdown past the grace period), how long its
   * handler may take to wind down (save a checkpoint) before the loop moves on, seconds.
   */
  PGPT_WORKER_ABORT_WAIT_S: int(0, 600).default(2),
  /** Long-poll wait per receive, seconds. */
  PGPT_WORKER_WAIT_S: int(0, 20).default(20),
  /** Production job kinds this worker runs, comma-separated; `none` for none. Default generation,fine_tune,batch. */
  PGPT_WORKER_KINDS: z
    .string()
    .transform((s) =>
      s.trim() === 'none'
        ? []
        : s
            .split(',')
            .map((k) => k.trim())
            .filter(Boolean),
    )
    .pipe(z.array(z.enum(['generation', 'fine_tune', 'batch'])))
    .default(['generation', 'fine_tune', 'batch']),
  /**
   * Modules whose `handlers` export (job kind → JobHandler) are registered
   * beside the built-in kinds: comma-separated paths, relative to the working
   * directory. How extra job kinds are added without changing the worker (the
   * tests add test.sleep, test.fail and test.crash this way).
   */
  PGPT_HANDLER_MODULES: z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((p) => p.trim())
        .filter(Boolean),
    )
    .default([]),
})

export type WorkerSettings = z.infer<typeof workerSettingsSchema>

export function parseWorkerSettings(env: ConfigSource = process.env): WorkerSettings {
  const picked: ConfigSource = {}
  for (const key of Object.keys(workerSettingsSchema.shape)) if (env[key]) picked[key] = env[key]
  const result = workerSettingsSchema.safeParse(picked)
  if (!result.success)
    throw new ConfigError(
      result.error.issues.map((i) => {
        const variable = String(i.path[0] ?? '(worker settings)')
        return { variable, message: `${i.message} (got '${picked[variable]}')` }
      }),
    )
  return result.data
}
