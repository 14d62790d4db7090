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
import { ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger } from '../core/logger.js'
import { openWiring } from '../core/wiring.js'
import { nodeBackends } from '../core/wiring-node.js'
import { parseWorkerSettings } from './settings.js'
import type { JobHandler } from './worker-loop.js'
import { startWorkerProcess } from './worker-process.js'

async function main(): Promise<void> {
  const config = loadConfig()
  const settings = parseWorkerSettings()
  const logger = createLogger({ service: 'worker', level: config.PGPT_LOG_LEVEL })
  let batches: import('./batches/worker.js').BatchWorker | undefined
  // One set of adapters for the loop, the batch chunks and the handlers.
  const wiring = openWiring(config, nodeBackends(config))
  const { store } = wiring
  const worker = await startWorkerProcess({
    config,
    settings,
    logger,
    wiring,
    handlers: async ({ metrics }) => {
      const handlers: Record<string, JobHandler> = {}
      const kinds = settings.PGPT_WORKER_KINDS
      if (kinds.includes('generation') || kinds.includes('batch')) {
        const { GenerationEngine, createGenerationHandler } = await import('./generation/index.js')
        const engine = GenerationEngine.fromConfig(config, { store, logger, metrics })
        if (kinds.includes('generation')) handlers.generation = createGenerationHandler(engine) as JobHandler
        if (kinds.includes('batch')) {
          // Batch lines share the engine (continuous batching); chunks run in their own loop.
          const { startBatchWorker } = await import('./batches/index.js')
          batches = startBatchWorker({
            config,
            wiring,
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
        handlers.fine_tune = createFineTuneHandler({
          store,
          usage: wiring.records().usage,
          maxSteps: config.PGPT_MAX_FINE_TUNE_STEPS,
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
  await wiring.close()
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
