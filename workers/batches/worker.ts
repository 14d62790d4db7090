/**
 * Batches in a worker process (workers/main.ts calls this when
 * PGPT_WORKER_KINDS has `batch`): the `batch` handler for the main loop, and
 * the `batch_chunk` loop.
 *
 * Priority: in the local profile chunks have their own queue
 * (`batch-chunks` in the same SQLite file) and their own worker loop with
 * `chunkConcurrency` slots (default 2), so a chunk never takes one of the
 * main loop's slots and interactive jobs never wait behind chunks; batch
 * lines also hold at most half of the engine's rows (handlers.ts). With SQS
 * (one queue URL so far) chunks share the main queue and loop, and only the
 * engine-row limit applies.
 *
 * Webhooks: a batch with a `webhook` gets one `completed` delivery when it
 * ends, written to the durable delivery log (the records' `deliveries`) that
 * the dispatchers send from (same webhook-id on every retry and on a second
 * finalizer).
 */
import { MemoryEvents } from '../../core/adapters/memory-events.js'
import type { Config } from '../../core/config.js'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { DeliveryLog } from '../../core/ports/delivery-log.js'
import { type BatchRecord, batchView } from '../../core/records/batches.js'
import { createModelCatalog } from '../../core/records/model-catalog.js'
import type { Wiring } from '../../core/wiring.js'
import { drainDeadLetter } from '../dead-letter.js'
import type { GenerationEngine } from '../generation/engine.js'
import { webhookId } from '../webhooks/dispatcher.js'
import { type JobHandler, runWorker } from '../worker-loop.js'
import { BATCH_CHUNK_KIND, createBatchHandlers } from './handlers.js'

export const BATCH_CHUNKS_QUEUE = 'batch-chunks'
export const DEFAULT_CHUNK_CONCURRENCY = 2

export interface BatchWorkerOptions {
  config: Config
  /** The process's adapters (its owner closes them): batch records in its store, chunk jobs in its records. */
  wiring: Wiring
  engine: GenerationEngine
  logger: Logger
  metrics?: Metrics
  /** Chunks at once in this process. Default 2. */
  chunkConcurrency?: number
  /** Long-poll wait of the chunk loop, seconds. Default 20. */
  waitTimeSeconds?: number
  /** How often the chunk queue's dead-letter queue is drained, ms; 0: never. Default 30 000. */
  deadLetterIntervalMs?: number
}

export interface BatchWorker {
  /** Handlers for the main loop: `batch` (and `batch_chunk` when chunks share the main queue). */
  handlers: Record<string, JobHandler>
  /** Graceful stop of the chunk loop (as the main loop's); resolves like `done`. */
  shutdown(): Promise<void>
  done: Promise<void>
}

/** Logs the `completed` webhook of a batch that asked for one. */
export function batchNotifier(log: DeliveryLog, logger?: Logger) {
  return async (b: BatchRecord): Promise<void> => {
    if (!b.webhook) return
    const added = await log.enqueue({
      id: webhookId(b.id, 'completed'),
      jobId: b.id,
      requestId: b.internal.requestId,
      tenant: b.internal.tenant,
      event: 'completed',
      url: b.webhook,
      payload: JSON.stringify(batchView(b)),
    })
    logger?.debug({ batchId: b.id, added }, 'batch webhook logged')
  }
}

export function startBatchWorker(o: BatchWorkerOptions): BatchWorker {
  const { config, logger, wiring } = o
  const store = wiring.store
  // The records the main loop reads: chunk jobs created anywhere else would be acked as missing.
  const { jobs, usage, deliveries } = wiring.records()
  const log = logger.child({ component: 'batches' })
  const models = createModelCatalog(store, {
    onTokenizerError: (model, err) => log.warn({ model, err }, 'tokenizer not loaded; estimating tokens'),
  })
  const common = {
    store,
    jobs,
    engine: o.engine,
    models,
    maxReceiveCount: config.PGPT_MAX_RECEIVE_COUNT,
    maxLines: config.PGPT_MAX_BATCH_LINES,
    notify: batchNotifier(deliveries, log),
    usage,
    logger: log,
  }
  if (config.PGPT_QUEUE !== 'local') {
    const { queue } = wiring.queue()
    const h = createBatchHandlers({ ...common, chunkQueue: queue })
    let stop!: () => void
    const stopped = new Promise<void>((resolve) => {
      stop = resolve
    })
    const done = stopped
    return {
      handlers: { batch: h.batch, batch_chunk: h.batch_chunk },
      shutdown() {
        stop()
        return done
      },
      done,
    }
  }

  const chunks = wiring.queue(BATCH_CHUNKS_QUEUE)
  const h = createBatchHandlers({ ...common, chunkQueue: chunks.queue })
  // A chunk dead-lettered (its worker died on every delivery) still ends: its unfinished lines fail.
  let draining: Promise<unknown> = Promise.resolve()
  const drain = () => {
    draining = drainDeadLetter({
      deadLetter: chunks.deadLetter,
      jobs,
      maxReceiveCount: chunks.maxReceiveCount,
      logger: log.child({ component: 'batch-dead-letter' }),
      onJobEvent: async (job) => {
        const i = job.input as { batchId?: unknown; chunk?: unknown }
        if (job.kind === BATCH_CHUNK_KIND && typeof i?.batchId === 'string' && typeof i.chunk === 'number')
          await h.abandonChunk(job.tenant, i.batchId, i.chunk)
      },
    }).catch((err) => log.error({ err }, 'batch dead-letter drain failed'))
  }
  const dlqMs = o.deadLetterIntervalMs ?? 30_000
  const dlqTimer = dlqMs > 0 ? setInterval(drain, dlqMs) : undefined
  dlqTimer?.unref()
  const ctrl = new AbortController()
  const done = runWorker({
    queue: chunks.queue,
    jobs,
    events: new MemoryEvents(),
    handlers: { batch_chunk: h.batch_chunk },
    signal: ctrl.signal,
    concurrency: o.chunkConcurrency ?? DEFAULT_CHUNK_CONCURRENCY,
    visibilityTimeoutSeconds: config.PGPT_VISIBILITY_TIMEOUT_S,
    maxReceiveCount: chunks.maxReceiveCount,
    waitTimeSeconds: o.waitTimeSeconds ?? 20,
    abortableReceive: true,
    shutdownGraceMs: config.PGPT_SHUTDOWN_GRACE_S * 1000,
    statsIntervalMs: 0,
    logger: log.child({ queue: BATCH_CHUNKS_QUEUE }),
    metrics: o.metrics,
  }).finally(async () => {
    clearInterval(dlqTimer)
    await draining
  })
  return {
    handlers: { batch: h.batch },
    shutdown() {
      ctrl.abort()
      return done
    },
    done,
  }
}
