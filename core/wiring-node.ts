/**
 * Node's backends for core/wiring.ts: what the local profile runs on. One
 * SQLite file, `<PGPT_DATA_DIR>/pgpt.db`, holds the local queues, job
 * records, API keys, usage and the webhook delivery log, shared by the
 * edge, the worker processes and the CLI; the store is the folder `<PGPT_DATA_DIR>/store`.
 *
 *   const w = openWiring(config, nodeBackends(config))
 */
import { join } from 'node:path'
import { FsObjectStore } from './adapters/fs-store.js'
import { openLocalQueue } from './adapters/local-queue.js'
import { SqliteDeliveryLog } from './adapters/sqlite-delivery-log.js'
import { SqliteJobStore } from './adapters/sqlite-job-store.js'
import { SqliteKeyStore } from './adapters/sqlite-key-store.js'
import { SqliteUsageStore } from './adapters/sqlite-usage-store.js'
import type { Config } from './config.js'
import type { Backends } from './wiring.js'

/** The local profile's SQLite file, shared by the edge, the workers and the CLI. */
export const localDbFile = (config: Pick<Config, 'PGPT_DATA_DIR'>) => join(config.PGPT_DATA_DIR, 'pgpt.db')

export function nodeBackends(config: Config): Backends {
  const file = localDbFile(config)
  return {
    queue: (name) =>
      openLocalQueue({
        file,
        name,
        visibilityTimeoutSeconds: config.PGPT_VISIBILITY_TIMEOUT_S,
        maxReceiveCount: config.PGPT_MAX_RECEIVE_COUNT,
      }),
    store: () => new FsObjectStore({ root: join(config.PGPT_DATA_DIR, 'store') }),
    records: () => ({
      jobs: new SqliteJobStore({ file }),
      keys: new SqliteKeyStore({ file }),
      usage: new SqliteUsageStore({ file }),
      deliveries: new SqliteDeliveryLog({ file }),
    }),
  }
}
