/**
 * Wiring for PGPT_RECORDS=object (Node runtimes: workers, Lambda functions,
 * the edge on Node): the ObjectStore of PGPT_STORE, and the job, key and usage
 * stores over it. Every process that opens these with the same PGPT_STORE
 * settings shares one set of records.
 *
 *   const { store, jobs, keys, usage } = openObjectRecordStores(config)
 *
 * The S3 store takes credentials from the SDK's provider chain (environment,
 * instance or task role). PGPT_STORE=fs puts the records in
 * `<PGPT_DATA_DIR>/store` (one host, several processes).
 */
import { join } from 'node:path'
import { type Config, ConfigError } from '../config.js'
import type { JobStore } from '../ports/job-store.js'
import type { KeyStore } from '../ports/key-store.js'
import type { ObjectStore } from '../ports/object-store.js'
import type { UsageStore } from '../ports/usage-store.js'
import { FsObjectStore } from './fs-store.js'
import { ObjectJobStore } from './object-job-store.js'
import { ObjectKeyStore } from './object-key-store.js'
import { ObjectUsageStore } from './object-usage-store.js'
import { S3ObjectStore } from './s3-store.js'

export interface ObjectRecordStores {
  store: ObjectStore
  jobs: JobStore
  keys: KeyStore
  usage: UsageStore
}

/** The ObjectStore named by PGPT_STORE. */
export function openConfiguredStore(config: Config): ObjectStore {
  if (config.PGPT_STORE === 's3')
    return new S3ObjectStore({
      bucket: config.PGPT_S3_BUCKET!,
      region: config.AWS_REGION,
      endpoint: config.PGPT_S3_ENDPOINT,
      forcePathStyle: config.PGPT_S3_FORCE_PATH_STYLE,
    })
  return new FsObjectStore({ root: join(config.PGPT_DATA_DIR, 'store') })
}

export function openObjectRecordStores(
  config: Config,
  store = openConfiguredStore(config),
): ObjectRecordStores {
  if (config.PGPT_RECORDS !== 'object')
    throw new ConfigError([
      { variable: 'PGPT_RECORDS', message: `must be 'object' here (got '${config.PGPT_RECORDS}')` },
    ])
  return {
    store,
    jobs: new ObjectJobStore({ store }),
    keys: new ObjectKeyStore({ store }),
    usage: new ObjectUsageStore({ store }),
  }
}
