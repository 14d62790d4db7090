/**
 * The worker process entrypoint (the worker image's CMD):
 *
 *   node --import tsx workers/main.ts
 *
 * Reads configuration (core/config-node.ts: environment and PGPT_CONFIG_FILE,
 * plus workers/settings.ts), builds the handlers of PGPT_WORKER_KINDS, and runs
 * the worker (worker-process.ts) until SIGTERM or SIGINT: then it stops
 * receiving, gives in-flight jobs PGPT_SHUTDOWN_GRACE_S, releases the rest for
 * other workers, and exits 0. A second signal exits at once (un-acked messages
 * come back after the visibility timeout). Exit 78 on bad configuration.
 */

import { join } from 'node:path'
import { FsObjectStore } from '../core/adapters/fs-store.js'
import { ObjectUsageStore } from '../core/adapters/object-usage-store.js'
import { S3ObjectStore } from '../core/adapters/s3-store.js'
import { SqliteUsageStore } from '../core/adapters/sqlite-usage-store.js'
import { type Config, ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger } from '../core/logger.js'
import type { ObjectStore } from '../core/ports/object-store.js'
import type { UsageStore } from '../core/ports/usage-store.js'
import { parseWorkerSettings } from './settings.js'
import type { JobHandler } from './worker-loop.js'
import { localDbFile, startWorkerProcess } from './worker-process.js'

function openStore(config: Config): ObjectStore {
  if (config.PGPT_STORE === 's3')
    return new S3ObjectStore({
      bucket: config.PGPT_S3_BUCKET!,
      region: config.AWS_REGION,
      endpoint: config.PGPT_S3_ENDPOINT,
      forcePathStyle: config.PGPT_S3_FORCE_PATH_STYLE,
    })
  return new FsObjectStore({ root: join(config.PGPT_DATA_DIR, 'store') })
}

/** Where metered usage goes: the shared records of the profile (as the edge writes them). */
function openUsageStore(config: Config, store: ObjectStore): UsageStore {
  return config.PGPT_RECORDS === 'object'
    ? new ObjectUsageStore({ store })
    : new SqliteUsageStore({ file: localDbFile(config) })
}

async function main(): Promise<void> {
  const config = loadConfig()
  const settings = parseWorkerSettings()
  const logger = createLogger({ service: 'worker', level: config.PGPT_LOG_LEVEL })
  let batches: import('./batches/worker.js').BatchWorker | undefined
  const worker = await startWorkerProcess({
    config,
    settings,
    logger,
    handlers: async ({ metrics }) => {
      const handlers: Record<string, JobHandler> = {}
      const kinds = settings.PGPT_WORKER_KINDS
      if (kinds.includes('generation') || kinds.includes('batch')) {
        const { GenerationEngine, createGenerationHandler } = await import('./generation/index.js')
        const store = await openStore(config)
        const engine = GenerationEngine.fromConfig(config, { store, logger, metrics })
        if (kinds.includes('generation')) handlers.generation = createGenerationHandler(engine) as JobHandler
        if (kinds.includes('batch')) {
          // Batch lines share the engine (continuous batching); chunks run in their own loop.
          const { startBatchWorker } = await import('./batches/index.js')
          batches = startBatchWorker({
            config,
            store,
            engine,
            logger,
            metrics,
            waitTimeSeconds: settings.PGPT_WORKER_WAIT_S,
          })
          Object.assign(handlers, batches.handlers)
        }
      }
      if (settings.PGPT_WORKER_KINDS.includes('fine_tune')) {
        const { createFineTuneHandler } = await import('./fine-tuning/index.js')
        const store = await openStore(config)
        handlers.fine_tune = createFineTuneHandler({
          store,
          usage: openUsageStore(config, store),
          workDir: join(
            config.PGPT_MODEL_CACHE_DIR ?? join(config.PGPT_DATA_DIR, 'model-cache'),
            'fine-tuning',
          ),
          logger,
        })
      }
      return handlers
    },
  })
  let signals = 0
  const onSignal = (sig: NodeJS.Signals) => {
    signals++
    if (signals > 1) {
      logger.warn({ signal: sig }, 'second signal: exiting now')
      process.exit(1)
    }
    logger.info({ signal: sig }, 'signal received: draining')
    void worker.shutdown()
    void batches?.shutdown()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  await worker.done
  await batches?.shutdown()
  process.exit(0)
}

main().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(78)
  }
  createLogger({ service: 'worker' }).fatal({ err }, 'worker failed to start')
  process.exit(1)
})
