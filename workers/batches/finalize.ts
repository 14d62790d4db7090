/**
 * Finalizing a batch: once every chunk is done (or stopped by cancel or
 * expiry), assemble the output file (the successful lines) and the error file
 * (failed lines, and lines never started: batch_cancelled / batch_expired)
 * from the per-line results, one line per request, then set the final status
 * by compare-and-swap and notify. Idempotent: the files' ids are fixed by the
 * batch id and their content by the create-once results, so two finalizers
 * (a redelivered chunk) write the same files and only one status change wins.
 */
import type { Logger } from '../../core/logger.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import {
  type BatchRecord,
  type BatchResultLine,
  type BatchStatus,
  errorFileId,
  getBatch,
  getChunk,
  isTerminalBatch,
  listResults,
  outputFileId,
  updateBatch,
} from '../../core/records/batches.js'
import { createFile } from '../../core/records/files.js'

export interface FinalizeDeps {
  store: ObjectStore
  notify?: (b: BatchRecord) => void | Promise<void>
  logger?: Logger
}

const now = () => Math.floor(Date.now() / 1000)

export async function finalizeBatch(
  d: FinalizeDeps,
  tenant: string,
  batchId: string,
): Promise<BatchRecord | null> {
  const { store } = d
  let b = await updateBatch(store, tenant, batchId, (cur) =>
    cur.status === 'in_progress' || cur.status === 'validating'
      ? { ...cur, status: 'finalizing', finalizing_at: now() }
      : null,
  )
  if (!b || isTerminalBatch(b.status)) return b
  const cancelled = b.status === 'cancelling'
  const results = await listResults(store, tenant, batchId)
  const missing: Array<{ line: number; custom_id: string }> = []
  for (let n = 0; n < (b.internal.chunks ?? 0); n++) {
    for (const pl of (await getChunk(store, tenant, batchId, n)) ?? [])
      if (!results.has(pl.line)) missing.push({ line: pl.line, custom_id: pl.custom_id })
  }
  const expired = !cancelled && missing.length > 0 && Date.now() >= b.expires_at * 1000
  const code = cancelled ? 'batch_cancelled' : expired ? 'batch_expired' : 'batch_incomplete'
  const message = cancelled
    ? 'The batch was cancelled before this request ran.'
    : expired
      ? 'The batch expired before this request ran.'
      : 'This request did not run.'
  const ok: string[] = []
  const failed: string[] = []
  for (const r of [...results.values()].sort((x, y) => x.line - y.line))
    (r.ok ? ok : failed).push(JSON.stringify(r.result))
  for (const m of missing) {
    const line: BatchResultLine = {
      id: `batch_req_${batchId.slice('batch_'.length)}_${m.line}`,
      custom_id: m.custom_id,
      response: null,
      error: { code, message },
    }
    failed.push(JSON.stringify(line))
  }
  // Set by the edge when the batch was made (output_expires_after, or the configured default).
  const expiresAfterS = b.internal.outputExpiresAfterS ?? null
  const file = (id: string, name: string, rows: string[]) =>
    rows.length
      ? createFile(store, tenant, {
          id,
          filename: name,
          purpose: 'batch_output',
          content: `${rows.join('\n')}\n`,
          expiresAfterS,
        })
      : Promise.resolve(null)
  const out = await file(outputFileId(batchId), `${batchId}_output.jsonl`, ok)
  const err = await file(errorFileId(batchId), `${batchId}_error.jsonl`, failed)
  const status: BatchStatus = cancelled ? 'cancelled' : expired ? 'expired' : 'completed'
  const at = now()
  b = await updateBatch(store, tenant, batchId, (cur) =>
    isTerminalBatch(cur.status)
      ? null
      : {
          ...cur,
          status,
          ...(status === 'cancelled'
            ? { cancelled_at: at }
            : status === 'expired'
              ? { expired_at: at }
              : { completed_at: at }),
          output_file_id: out?.id ?? null,
          error_file_id: err?.id ?? null,
          request_counts: { total: cur.request_counts.total, completed: ok.length, failed: failed.length },
        },
  )
  if (b && isTerminalBatch(b.status)) {
    d.logger?.info(
      { batchId, status: b.status, completed: ok.length, failed: failed.length },
      'batch finalized',
    )
    try {
      await d.notify?.(b)
    } catch (e) {
      d.logger?.warn({ err: e, batchId }, 'batch notification failed')
    }
  }
  // Re-read: the record as stored (another finalizer may have won).
  return b ?? (await getBatch(store, tenant, batchId))
}
