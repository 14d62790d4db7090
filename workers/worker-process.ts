/**
 * A worker process, wired from configuration: adapters by profile, handlers,
 * the worker loop, the webhook dispatcher, the periodic dead-letter drain, and
 * the /metrics + /health server. `main.ts` runs it and turns SIGTERM into
 * `shutdown()`; tests may run it in-process.
 *
 * Local SQLite file: `<PGPT_DATA_DIR>/pgpt.db` holds the queue `generation` (and
 * `generation-dlq`), the job and usage records and `webhook_deliveries`; the local
 * edge opens the same file. With object records (cloud profiles) the job and usage
 * records and the webhook delivery log are in the shared store: a worker keeps no
 * state of its own, so scale-in loses no retry.
 */
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { HttpEvents } from '../core/adapters/http-events.js'
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { type Config, ConfigError } from '../core/config.js'
import type { Logger } from '../core/logger.js'
import { createMetrics, type Metrics } from '../core/metrics.js'
import type { Events } from '../core/ports/events.js'
import { loadOrCreateSigningKey, tenantWebhookSecret } from '../core/webhook-secrets.js'
import { openWiring, type Wiring } from '../core/wiring.js'
import { nodeBackends } from '../core/wiring-node.js'
import { drainDeadLetter } from './dead-letter.js'
import { generationMeter } from './generation/usage.js'
import { startWorkerServer } from './http-server.js'
import type { WorkerSettings } from './settings.js'
import { WebhookDispatcher } from './webhooks/dispatcher.js'
import { type JobHandler, runWorker } from './worker-loop.js'

export interface WorkerProcess {
  /** Port of the /metrics + /health server, when one runs. */
  port?: number
  /** Resolves when the loop ended and everything is closed. */
  done: Promise<void>
  /** Start the graceful shutdown (idempotent); resolves like `done`. */
  shutdown(): Promise<void>
}

export interface WorkerDeps {
  config: Config
  settings: WorkerSettings
  logger: Logger
  /** Builds the handlers of production kinds (generation, …) once metrics exist. */
  handlers?: (ctx: { metrics: Metrics; logger: Logger }) => Promise<Record<string, JobHandler>>
  /** Adapters shared with the handlers (workers/main.ts); default: opened from `config` (and closed at the end). */
  wiring?: Wiring
}

function openEvents(config: Config, logger: Logger): Events & { close?(): Promise<void> } {
  if (config.PGPT_EDGE_URL) {
    if (!config.PGPT_INTERNAL_TOKEN)
      throw new ConfigError([
        { variable: 'PGPT_INTERNAL_TOKEN', message: 'required when PGPT_EDGE_URL is set' },
      ])
    return new HttpEvents({
      edgeUrl: config.PGPT_EDGE_URL,
      token: config.PGPT_INTERNAL_TOKEN,
      maxBodyBytes: config.PGPT_MAX_INTERNAL_BODY_BYTES,
      onError: (err, events) =>
        logger.warn(
          { err, jobId: events[0]?.jobId, count: events.length },
          'events not delivered to the edge',
        ),
    })
  }
  return new MemoryEvents()
}

function signingKey(config: Config): string {
  if (config.PGPT_WEBHOOK_SIGNING_KEY) return config.PGPT_WEBHOOK_SIGNING_KEY
  if (config.PGPT_PROFILE === 'local')
    return loadOrCreateSigningKey(join(config.PGPT_DATA_DIR, 'webhook-signing-key'))
  throw new ConfigError([
    {
      variable: 'PGPT_WEBHOOK_SIGNING_KEY',
      message: `required in the ${config.PGPT_PROFILE} profile (signs webhooks)`,
    },
  ])
}

/** A module of PGPT_HANDLER_MODULES: its `handlers` export, checked to be functions. */
async function loadHandlerModule(path: string): Promise<Record<string, JobHandler>> {
  const mod = (await import(pathToFileURL(resolve(path)).href)) as { handlers?: unknown }
  const handlers = mod.handlers
  if (
    !handlers ||
    typeof handlers !== 'object' ||
    !Object.values(handlers).every((h) => typeof h === 'function')
  )
    throw new ConfigError([
      {
        variable: 'PGPT_HANDLER_MODULES',
        message: `${path} does not export \`handlers\` (job kind → handler function)`,
      },
    ])
  return handlers as Record<string, JobHandler>
}

export async function startWorkerProcess(deps: WorkerDeps): Promise<WorkerProcess> {
  const { config, settings } = deps
  const workerId = `${hostname()}:${process.pid}`
  const logger = deps.logger.child({ worker: workerId })
  const metrics = createMetrics({ defaultMetrics: true })

  const handlers: Record<string, JobHandler> = { ...(await deps.handlers?.({ metrics, logger })) }
  for (const path of settings.PGPT_HANDLER_MODULES) {
    const extra = await loadHandlerModule(path)
    Object.assign(handlers, extra)
    logger.warn({ module: path, kinds: Object.keys(extra) }, 'job kinds registered from PGPT_HANDLER_MODULES')
  }

  if (Object.keys(handlers).length === 0)
    throw new ConfigError([
      { variable: 'PGPT_WORKER_KINDS', message: 'no job kind to run: set it, or PGPT_HANDLER_MODULES' },
    ])
  const key = signingKey(config)
  const wiring = deps.wiring ?? openWiring(config, nodeBackends(config))
  const { queue, deadLetter, maxReceiveCount } = wiring.queue()
  // Job records shared with the edge: the local SQLite file, or objects in the
  // configured store (S3/R2/MinIO with conditional writes) for cloud profiles.
  const { jobs, usage, deliveries } = wiring.records()
  const events = openEvents(config, logger)
  const dispatcher = new WebhookDispatcher({
    log: deliveries,
    secretFor: (tenant) => tenantWebhookSecret(key, tenant),
    retryScheduleMs: settings.PGPT_WEBHOOK_RETRY_SCHEDULE_MS,
    timeoutMs: config.PGPT_WEBHOOK_TIMEOUT_MS,
    allowPrivate: config.PGPT_WEBHOOK_ALLOW_PRIVATE,
    logger: logger.child({ component: 'webhooks' }),
    metrics,
  })

  const ctrl = new AbortController()
  let draining = false

  let server: Awaited<ReturnType<typeof startWorkerServer>> | undefined
  if (settings.PGPT_WORKER_METRICS_PORT !== undefined) {
    server = await startWorkerServer({
      port: settings.PGPT_WORKER_METRICS_PORT,
      host: settings.PGPT_WORKER_METRICS_HOST ?? (config.PGPT_PROFILE === 'local' ? '127.0.0.1' : '0.0.0.0'),
      registry: metrics.registry,
      metricsToken: config.PGPT_METRICS_TOKEN,
      health: () => ({
        ok: !draining,
        status: draining ? 'draining' : 'ok',
        worker: workerId,
      }),
    })
    logger.info({ port: server.port }, 'worker /metrics and /health listening')
  }

  // Periodic dead-letter drain: jobs that crashed workers or had no handler end as failed with a reason.
  let dlqTimer: NodeJS.Timeout | undefined
  let dlqRunning: Promise<unknown> = Promise.resolve()
  if (settings.PGPT_DEAD_LETTER_INTERVAL_S > 0) {
    const drain = () => {
      dlqRunning = drainDeadLetter({
        deadLetter,
        jobs,
        events,
        maxReceiveCount,
        logger: logger.child({ component: 'dead-letter' }),
        metrics,
        onJobEvent: dispatcher.onJobEvent,
      }).catch((err) => logger.error({ err }, 'dead-letter drain failed'))
    }
    dlqTimer = setInterval(drain, settings.PGPT_DEAD_LETTER_INTERVAL_S * 1000)
    drain()
  }

  dispatcher.start()
  const loop = runWorker({
    queue,
    jobs,
    events,
    handlers,
    signal: ctrl.signal,
    concurrency: config.PGPT_WORKER_CONCURRENCY,
    visibilityTimeoutSeconds: config.PGPT_VISIBILITY_TIMEOUT_S,
    maxReceiveCount,
    waitTimeSeconds: settings.PGPT_WORKER_WAIT_S,
    // The local queue's receive is one transaction: aborting a long poll cannot lose a lease.
    abortableReceive: config.PGPT_QUEUE === 'local',
    unhandledDelaySeconds: settings.PGPT_WORKER_UNHANDLED_DELAY_S,
    shutdownGraceMs: config.PGPT_SHUTDOWN_GRACE_S * 1000,
    abortWaitMs: settings.PGPT_WORKER_ABORT_WAIT_S * 1000,
    retryBackoff: { base: settings.PGPT_WORKER_RETRY_BASE_S, max: settings.PGPT_WORKER_RETRY_MAX_S },
    deadLetter,
    logger,
    metrics,
    onJobEvent: dispatcher.onJobEvent,
    // Usage of generation jobs, in the records the edge's GET /v1/usage reads.
    meter: generationMeter(usage),
  })

  const done = loop.finally(async () => {
    if (dlqTimer) clearInterval(dlqTimer)
    await dlqRunning
    await (events as { close?(): Promise<void> })
      .close?.()
      .catch((err) => logger.warn({ err }, 'events flush failed'))
    await dispatcher.stop()
    if (!deps.wiring) await wiring.close()
    await server?.close()
    logger.info('worker process stopped')
  })

  return {
    port: server?.port,
    done,
    shutdown() {
      if (!draining) {
        draining = true
        logger.info({ graceSeconds: config.PGPT_SHUTDOWN_GRACE_S }, 'shutdown requested')
        ctrl.abort()
      }
      return done
    },
  }
}
