/**
 * Scheduled cleanup (sst.config.ts runs it hourly): deletes expired uploaded
 * files and job results from the object store.
 *
 * An object expires when its metadata `expires-at` (epoch ms, as written by
 * the edge and the workers) is in the past. Only the prefixes in
 * CLEANUP_PREFIXES are scanned; objects without `expires-at` are kept (model
 * artifacts, records and anything else live elsewhere or never expire).
 * S3's listing does not return metadata, so every listed object costs one
 * HEAD: a run stops after `maxObjects` and the next run goes on.
 */
import { openConfiguredStore } from '../core/adapters/object-stores.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger, type Logger } from '../core/logger.js'
import type { ObjectStore } from '../core/ports/object-store.js'

/** Where expiring objects live: uploaded files and job results (batch outputs, large outputs). */
export const CLEANUP_PREFIXES = ['files/', 'results/'] as const
/** The metadata key, epoch ms. */
export const EXPIRES_AT = 'expires-at'

export interface CleanupOptions {
  store: ObjectStore
  logger: Logger
  now?: number
  prefixes?: readonly string[]
  /** Objects examined per run. Default 10 000. */
  maxObjects?: number
}

export interface CleanupResult {
  examined: number
  deleted: string[]
  /** True when the run stopped at maxObjects. */
  truncated: boolean
}

export async function cleanupExpired(o: CleanupOptions): Promise<CleanupResult> {
  const now = o.now ?? Date.now()
  const max = o.maxObjects ?? 10_000
  const out: CleanupResult = { examined: 0, deleted: [], truncated: false }
  for (const prefix of o.prefixes ?? CLEANUP_PREFIXES) {
    let cursor: string | undefined
    do {
      const page = await o.store.list(prefix, cursor === undefined ? {} : { cursor })
      for (const obj of page.objects) {
        if (out.examined >= max) {
          out.truncated = true
          return out
        }
        out.examined++
        const info = obj.metadata ? obj : await o.store.head(obj.key)
        const raw = info?.metadata?.[EXPIRES_AT]
        if (raw === undefined) continue
        const at = Number(raw)
        if (!Number.isFinite(at)) {
          o.logger.warn({ key: obj.key, [EXPIRES_AT]: raw }, 'unreadable expires-at; kept')
          continue
        }
        if (at <= now) {
          await o.store.delete(obj.key)
          out.deleted.push(obj.key)
        }
      }
      cursor = page.cursor
    } while (cursor !== undefined)
  }
  return out
}

/** The Lambda entry (`functions/cleanup.handler`), run by an sst.aws.Cron. */
export async function handler(): Promise<CleanupResult> {
  const config = loadConfig()
  const logger = createLogger({ service: 'cleanup', level: config.PGPT_LOG_LEVEL })
  const result = await cleanupExpired({ store: openConfiguredStore(config), logger })
  logger.info(
    { examined: result.examined, deleted: result.deleted.length, truncated: result.truncated },
    'cleanup done',
  )
  return result
}
