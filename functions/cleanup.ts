/**
 * Scheduled cleanup (sst.config.ts runs it hourly): the retention sweep of
 * core/retention.ts over the bucket — expired files (their `expires_at`, in
 * the file records), finished batches' chunks and results, and, with
 * PGPT_RECORDS=object, job records finished more than PGPT_JOB_RETENTION_DAYS
 * ago. Expiry is read from the records, never from object tags, so the same
 * sweep works on S3, R2, MinIO and a folder, and nothing depends on a bucket
 * lifecycle rule. One run deletes at most `limit` of each kind; the next run
 * goes on (`truncated` says so).
 */
import { loadConfig } from '../core/config-node.js'
import { createLogger } from '../core/logger.js'
import { retentionPolicy, type SweepResult, sweepExpired } from '../core/retention.js'
import { memoryBackends, openWiring } from '../core/wiring.js'

/** The Lambda entry (`functions/cleanup.handler`), run by an sst.aws.Cron. */
export async function handler(): Promise<SweepResult> {
  const config = loadConfig()
  const logger = createLogger({ service: 'cleanup', level: config.PGPT_LOG_LEVEL })
  // No disk outlives a Lambda: the bucket (PGPT_STORE=s3) and, with PGPT_RECORDS=object, the job records in it.
  const wiring = openWiring(config, memoryBackends(config))
  const jobs = config.PGPT_RECORDS === 'object' ? wiring.records().jobs : undefined
  const result = await sweepExpired({ store: wiring.store, jobs, logger }, retentionPolicy(config)).finally(
    () => wiring.close(),
  )
  logger.info(
    {
      files: result.files.length,
      batches: result.batches.length,
      batchObjects: result.batchObjects,
      jobs: result.jobs.length,
      truncated: result.truncated,
    },
    'cleanup done',
  )
  return result
}
