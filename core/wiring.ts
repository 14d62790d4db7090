/**
 * One wiring of adapters from configuration, for every entry point: the edge
 * on Node (edge/node.ts), on Workers (edge/worker.ts) and on Lambda
 * (functions/api.ts), the worker process (workers/worker-process.ts,
 * workers/main.ts, workers/batches/worker.ts) and the CLI. Each names what
 * it runs on by passing its `Backends`; the choice of queue, store and
 * records is made here, once, so two processes given the same configuration
 * always share one queue, one store and one set of records.
 *
 *   const w = openWiring(config, nodeBackends(config))   // core/wiring-node.ts; memoryBackends(config) below
 *   await w.queue().queue.send(...); await w.records().jobs.get(...)
 *
 * - PGPT_QUEUE: `sqs` (both URLs required, the same rule for producers and
 *   consumers) or `local` (the platform's queue).
 * - PGPT_STORE: `s3` or `fs` (the platform's store: a folder on Node, the R2
 *   binding on Workers, memory on Lambda).
 * - PGPT_RECORDS: `object` (jobs, keys, usage and webhook deliveries over
 *   the store, shared by every runtime) or `sqlite` (the platform's records: the SQLite file on
 *   Node, memory where there is no disk).
 *
 * Runtime-neutral: no Node-only import here (the Workers bundle includes it).
 */
import { MemoryJobStore } from './adapters/memory-job-store.js'
import { MemoryKeyStore } from './adapters/memory-key-store.js'
import { MemoryObjectStore } from './adapters/memory-object-store.js'
import { MemoryQueue } from './adapters/memory-queue.js'
import { MemoryUsageStore } from './adapters/memory-usage-store.js'
import { ObjectDeliveryLog } from './adapters/object-delivery-log.js'
import { ObjectJobStore } from './adapters/object-job-store.js'
import { ObjectKeyStore } from './adapters/object-key-store.js'
import { ObjectUsageStore } from './adapters/object-usage-store.js'
import { S3ObjectStore } from './adapters/s3-store.js'
import { createSqsQueue } from './adapters/sqs-queue.js'
import { type Config, ConfigError } from './config.js'
import type { DeliveryLog } from './ports/delivery-log.js'
import type { JobStore } from './ports/job-store.js'
import type { KeyStore } from './ports/key-store.js'
import type { ObjectStore } from './ports/object-store.js'
import type { QueueWithDeadLetter } from './ports/queue.js'
import type { UsageStore } from './ports/usage-store.js'

/** The queue every job kind goes through (its dead-letter queue is `<name>-dlq` where local). */
export const JOBS_QUEUE = 'generation'

/** Job, key and usage records and the webhook delivery log: what the edge and workers share besides the store. */
export interface Records {
  jobs: JobStore
  keys: KeyStore
  usage: UsageStore
  /** Where webhook retries wait: any worker (or the dead-letter function) sends what another scheduled. */
  deliveries: DeliveryLog
}

/** What a runtime provides where the configuration names no cloud service. */
export interface Backends {
  /** Queue `name` for PGPT_QUEUE=local. */
  queue(name: string): QueueWithDeadLetter
  /** The store for PGPT_STORE=fs. */
  store(): ObjectStore
  /** Records for PGPT_RECORDS=sqlite; `store` is the configured store. */
  records(store: ObjectStore): Records
}

/** The queue `name` the configuration names. */
export function openQueue(config: Config, backends: Backends, name = JOBS_QUEUE): QueueWithDeadLetter {
  if (config.PGPT_QUEUE !== 'sqs') return backends.queue(name)
  // core/config.ts requires both URLs with PGPT_QUEUE=sqs; checked again for configs built by hand.
  if (!config.PGPT_SQS_QUEUE_URL || !config.PGPT_SQS_DLQ_URL)
    throw new ConfigError([
      {
        variable: config.PGPT_SQS_QUEUE_URL ? 'PGPT_SQS_DLQ_URL' : 'PGPT_SQS_QUEUE_URL',
        message: 'required when PGPT_QUEUE=sqs',
      },
    ])
  if (name !== JOBS_QUEUE)
    throw new ConfigError([
      {
        variable: 'PGPT_QUEUE',
        message: `with sqs, only the '${JOBS_QUEUE}' queue exists (asked for '${name}')`,
      },
    ])
  return createSqsQueue({
    queueUrl: config.PGPT_SQS_QUEUE_URL,
    deadLetterQueueUrl: config.PGPT_SQS_DLQ_URL,
    region: config.AWS_REGION,
    endpoint: config.PGPT_SQS_ENDPOINT,
    visibilityTimeoutSeconds: config.PGPT_VISIBILITY_TIMEOUT_S,
    maxReceiveCount: config.PGPT_MAX_RECEIVE_COUNT,
  })
}

/** The ObjectStore the configuration names. */
export function openStore(config: Config, backends: Pick<Backends, 'store'>): ObjectStore {
  if (config.PGPT_STORE !== 's3') return backends.store()
  if (!config.PGPT_S3_BUCKET)
    throw new ConfigError([{ variable: 'PGPT_S3_BUCKET', message: 'required when PGPT_STORE=s3' }])
  return new S3ObjectStore({
    bucket: config.PGPT_S3_BUCKET,
    region: config.AWS_REGION,
    endpoint: config.PGPT_S3_ENDPOINT,
    forcePathStyle: config.PGPT_S3_FORCE_PATH_STYLE,
  })
}

/** Records over `store` (the whole object-records family). */
export function objectRecords(store: ObjectStore): Records {
  return {
    jobs: new ObjectJobStore({ store }),
    keys: new ObjectKeyStore({ store }),
    usage: new ObjectUsageStore({ store }),
    deliveries: new ObjectDeliveryLog({ store }),
  }
}

/** The records the configuration names; `store` is the configured store (openStore). */
export function openRecords(
  config: Config,
  store: ObjectStore,
  backends: Pick<Backends, 'records'>,
): Records {
  return config.PGPT_RECORDS === 'object' ? objectRecords(store) : backends.records(store)
}

/**
 * Everything in memory: where a runtime has no disk that outlives it (Lambda,
 * Workers without bindings) and the config names no cloud service — a demo
 * edge whose jobs no worker elsewhere can see.
 */
export function memoryBackends(config: Pick<Config, 'PGPT_MAX_RECEIVE_COUNT'>): Backends {
  return {
    queue: (name) => {
      const deadLetter = new MemoryQueue(`${name}-dlq`)
      const maxReceiveCount = config.PGPT_MAX_RECEIVE_COUNT
      return {
        queue: new MemoryQueue(name, { redrive: { deadLetter, maxReceiveCount } }),
        deadLetter,
        maxReceiveCount,
      }
    },
    store: () => new MemoryObjectStore(),
    records: () => ({
      jobs: new MemoryJobStore(),
      keys: new MemoryKeyStore(),
      usage: new MemoryUsageStore(),
      deliveries: new ObjectDeliveryLog({ store: new MemoryObjectStore() }),
    }),
  }
}

export interface Wiring {
  store: ObjectStore
  /** Opened on first use: a producer that never sends opens no queue. */
  queue(name?: string): QueueWithDeadLetter
  records(): Records
  /** Closes what was opened. */
  close(): Promise<void>
}

/** The store now; the queues and records when first asked for, each once. */
export function openWiring(config: Config, backends: Backends): Wiring {
  const store = openStore(config, backends)
  const queues = new Map<string, QueueWithDeadLetter>()
  let records: Records | undefined
  return {
    store,
    queue(name = JOBS_QUEUE) {
      let q = queues.get(name)
      if (!q) {
        q = openQueue(config, backends, name)
        queues.set(name, q)
      }
      return q
    },
    records() {
      records ??= openRecords(config, store, backends)
      return records
    },
    async close() {
      const closing: Array<Promise<void> | undefined> = []
      for (const q of queues.values()) closing.push(q.queue.close?.(), q.deadLetter.close?.())
      if (records)
        closing.push(
          records.jobs.close?.(),
          records.keys.close?.(),
          records.usage.close?.(),
          records.deliveries.close?.(),
        )
      closing.push(store.close?.())
      await Promise.allSettled(closing)
    },
  }
}
