/**
 * Batch records and per-line results in the ObjectStore. Pure functions over
 * the ObjectStore port, shared by the Batch API routes (edge/routes/batches.ts)
 * and the batch workers (workers/batches/):
 *
 *   batches/<tenant>/<id>.json                        the batch (OpenAI's object + `internal`)
 *   batch-data/<tenant>/<id>/chunks/<n>.json          chunk n's requests (line, custom_id, generation input)
 *   batch-data/<tenant>/<id>/results/<line>.json      one line's output line, written once (If-None-Match)
 *
 * The batch data (chunks, results) is scaffolding for the run: the retention
 * sweep (`sweepBatchData`, run by core/retention.ts) deletes it once the batch
 * has ended (after a grace period, so a late finalizer still reads it) or
 * when its batch record is gone. The output and error files carry their own
 * expiry (`internal.outputExpiresAfterS`, core/records/files.ts).
 *
 * A batch record changes only by compare-and-swap (object-records.ts
 * `casUpdate`), so the edge (cancel) and any number of chunk workers can
 * update it at once. A line's result is create-once: a chunk delivered twice
 * finds the lines already done and skips them, and finalization writes
 * exactly one output or error line per custom_id.
 */
import {
  casUpdate,
  decodeSegment,
  encodeSegment,
  getJson,
  listAll,
  putIfAbsent,
} from '../adapters/object-records.js'
import { newId } from '../ids.js'
import type { BatchUrl } from '../jsonl.js'
import type { ObjectStore } from '../ports/object-store.js'
import type { GenerationInput } from '../protocol.js'

export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const
export type BatchStatus = (typeof BATCH_STATUSES)[number]
export const TERMINAL_BATCH_STATUSES: readonly BatchStatus[] = ['failed', 'completed', 'expired', 'cancelled']
export const isTerminalBatch = (s: BatchStatus) => TERMINAL_BATCH_STATUSES.includes(s)

export interface BatchError {
  code: string
  message: string
  param: string | null
  line: number | null
}

/** OpenAI's batch object; `webhook` is our extension (notified once the batch ends). */
export interface BatchObject {
  id: string
  object: 'batch'
  endpoint: BatchUrl
  errors: { object: 'list'; data: BatchError[] } | null
  input_file_id: string
  completion_window: string
  status: BatchStatus
  output_file_id: string | null
  error_file_id: string | null
  created_at: number
  in_progress_at: number | null
  expires_at: number
  finalizing_at: number | null
  completed_at: number | null
  failed_at: number | null
  expired_at: number | null
  cancelling_at: number | null
  cancelled_at: number | null
  request_counts: { total: number; completed: number; failed: number }
  metadata: Record<string, string> | null
  webhook: string | null
}

export interface BatchInternal {
  tenant: string
  /** The `batch` job that validates the input and fans out the chunks. */
  jobId: string
  requestId: string | null
  apiKeyId: string | null
  /** Chunks fanned out; null until the batch job has planned them. */
  chunks: number | null
  /** Chunks finished (or stopped by cancel/expiry), with their line outcomes. */
  done: Record<string, { completed: number; failed: number }>
  /** Lines refused before running (bad JSON, wrong url, invalid body). */
  invalid: number
  /**
   * Seconds the output and error files live after they are written (OpenAI's
   * `output_expires_after`, else the configured default); null: kept. Absent
   * in records made before it existed: kept.
   */
  outputExpiresAfterS?: number | null
  /**
   * The batch's estimated tokens (core/openai/batch-estimate.ts), held in the
   * tenant's `batch-tokens` ledger until it ends. Absent in records made before it existed.
   */
  tokenEstimate?: number
}

export interface BatchRecord extends BatchObject {
  internal: BatchInternal
}

/** One planned request of a chunk. */
export interface PlannedLine {
  /** Line number in the input file (1-based): the key of the line's result. */
  line: number
  custom_id: string
  input: GenerationInput
}

/** A line of the output or error file (OpenAI's batch output shape). */
export interface BatchResultLine {
  id: string
  custom_id: string | null
  response: { status_code: number; request_id: string; body: unknown } | null
  error: { code: string; message: string } | null
}

/** A stored result: the output line and whether it goes to the output file. */
export interface StoredResult {
  ok: boolean
  line: number
  result: BatchResultLine
}

export const newBatchId = () => `batch_${newId('b').slice(2)}`
export const BATCH_ID_PATTERN = /^batch_[a-z0-9]{1,64}$/

const seg = encodeSegment
const batchPrefix = (tenant: string) => `batches/${seg(tenant)}/`
export const batchKey = (tenant: string, id: string) => `${batchPrefix(tenant)}${id}.json`
const dataPrefix = (tenant: string, id: string) => `batch-data/${seg(tenant)}/${id}/`
export const chunkKey = (tenant: string, id: string, n: number) =>
  `${dataPrefix(tenant, id)}chunks/${String(n).padStart(6, '0')}.json`
export const resultsPrefix = (tenant: string, id: string) => `${dataPrefix(tenant, id)}results/`
export const resultKey = (tenant: string, id: string, line: number) =>
  `${resultsPrefix(tenant, id)}${String(line).padStart(9, '0')}.json`

/** The output and error files of a batch: ids fixed by the batch id, so finalizing twice writes the same files. */
export const outputFileId = (batchId: string) => `file-${batchId.slice('batch_'.length)}out`
export const errorFileId = (batchId: string) => `file-${batchId.slice('batch_'.length)}err`

export async function getBatch(store: ObjectStore, tenant: string, id: string): Promise<BatchRecord | null> {
  if (!BATCH_ID_PATTERN.test(id)) return null
  return getJson<BatchRecord>(store, batchKey(tenant, id))
}

export async function putNewBatch(store: ObjectStore, b: BatchRecord): Promise<void> {
  if (!(await putIfAbsent(store, batchKey(b.internal.tenant, b.id), JSON.stringify(b))))
    throw new Error(`batch ${b.id} exists already`)
}

/**
 * Compare-and-swap of a batch record: `fn` gets the current record and returns
 * the next one, or null to leave it. Returns the record as stored afterwards
 * (null when there is none).
 */
export async function updateBatch(
  store: ObjectStore,
  tenant: string,
  id: string,
  fn: (b: BatchRecord) => BatchRecord | null,
): Promise<BatchRecord | null> {
  return casUpdate<BatchRecord, BatchRecord | null>('batches', store, batchKey(tenant, id), (cur) => {
    if (!cur) return { done: null }
    const next = fn(cur)
    return next ? { write: next, result: next } : { done: cur }
  })
}

/** The API view: the record without `internal`. */
export function batchView(b: BatchRecord): BatchObject {
  const { internal: _internal, ...view } = b
  return view
}

/** Request counts as of the chunks done so far. */
export function liveCounts(b: BatchRecord): BatchObject['request_counts'] {
  let completed = 0
  let failed = b.internal.invalid
  for (const d of Object.values(b.internal.done)) {
    completed += d.completed
    failed += d.failed
  }
  return { total: b.request_counts.total, completed, failed }
}

/** Writes a line's result once; false when it was written before (the earlier one stands). */
export const putResult = (store: ObjectStore, tenant: string, id: string, r: StoredResult) =>
  putIfAbsent(store, resultKey(tenant, id, r.line), JSON.stringify(r))

export const getResult = (store: ObjectStore, tenant: string, id: string, line: number) =>
  getJson<StoredResult>(store, resultKey(tenant, id, line))

/** Every stored result of a batch, by line. */
export async function listResults(
  store: ObjectStore,
  tenant: string,
  id: string,
): Promise<Map<number, StoredResult>> {
  const out = new Map<number, StoredResult>()
  for await (const key of listAll(store, resultsPrefix(tenant, id))) {
    const r = await getJson<StoredResult>(store, key)
    if (r) out.set(r.line, r)
  }
  return out
}

export const putChunk = (store: ObjectStore, tenant: string, id: string, n: number, lines: PlannedLine[]) =>
  store.put(chunkKey(tenant, id, n), JSON.stringify(lines), { contentType: 'application/json' })

export const getChunk = (store: ObjectStore, tenant: string, id: string, n: number) =>
  getJson<PlannedLine[]>(store, chunkKey(tenant, id, n))

/** A page of the tenant's batches, newest first (ids sort by creation time). */
export async function listBatches(
  store: ObjectStore,
  tenant: string,
  o: { after?: string; limit?: number } = {},
): Promise<{ data: BatchRecord[]; hasMore: boolean }> {
  const limit = o.limit ?? 20
  const prefix = batchPrefix(tenant)
  const ids: string[] = []
  for await (const key of listAll(store, prefix))
    if (key.endsWith('.json')) ids.push(key.slice(prefix.length, -5))
  ids.sort().reverse()
  let start = 0
  if (o.after !== undefined) {
    start = ids.findIndex((x) => x < o.after!)
    if (start < 0) start = ids.length
  }
  const page = ids.slice(start, start + limit)
  const data = (await Promise.all(page.map((id) => getBatch(store, tenant, id)))).filter(
    (b): b is BatchRecord => b !== null,
  )
  return { data, hasMore: start + limit < ids.length }
}

/** When the batch ended (Unix seconds), or null while it runs. */
export function batchEndedAt(b: BatchObject): number | null {
  if (!isTerminalBatch(b.status)) return null
  const at = [b.completed_at, b.failed_at, b.expired_at, b.cancelled_at].filter(
    (t): t is number => t !== null,
  )
  return at.length ? Math.max(...at) : b.created_at
}

/** How long a finished batch's data is kept before the sweep deletes it: a late finalizer or chunk still finds it. */
export const BATCH_DATA_GRACE_MS = 3600_000

export interface SweptBatchData {
  /** `<tenant>/<batch id>` of each batch whose data was deleted (all of it, or up to the limit). */
  batches: string[]
  /** Objects deleted. */
  objects: number
  /** True when the sweep stopped at its limit with more to delete. */
  more: boolean
}

/**
 * Retention: deletes the chunks and results of every batch that ended at
 * least `graceMs` before `now` (epoch ms), or whose record is gone. At most
 * `limit` objects per call (default 10 000); the next call goes on.
 */
export async function sweepBatchData(
  store: ObjectStore,
  o: { now?: number; graceMs?: number; limit?: number } = {},
): Promise<SweptBatchData> {
  const now = o.now ?? Date.now()
  const grace = o.graceMs ?? BATCH_DATA_GRACE_MS
  const limit = o.limit ?? 10_000
  const out: SweptBatchData = { batches: [], objects: 0, more: false }
  // Keys sort by batch, so one batch's keys come together: its record is read once.
  let current: { prefix: string; name: string; remove: boolean } | undefined
  for await (const key of listAll(store, 'batch-data/')) {
    const [, tenantPart, id] = key.split('/')
    if (tenantPart === undefined || id === undefined) continue
    const prefix = `batch-data/${tenantPart}/${id}/`
    if (current?.prefix !== prefix) {
      const tenant = decodeSegment(tenantPart)
      const b = BATCH_ID_PATTERN.test(id) ? await getBatch(store, tenant, id) : null
      const ended = b ? batchEndedAt(b) : null
      current = {
        prefix,
        name: `${tenant}/${id}`,
        remove: !b || (ended !== null && ended * 1000 + grace <= now),
      }
    }
    if (!current.remove) continue
    if (out.objects >= limit) {
      out.more = true
      break
    }
    await store.delete(key)
    out.objects++
    if (out.batches.at(-1) !== current.name) out.batches.push(current.name)
  }
  return out
}

/** "24h" (OpenAI's only window) or, as an extension, a shorter one: "90s", "30m", "2h". Seconds, or null. */
export function parseCompletionWindow(w: string): number | null {
  const m = /^(\d{1,5})([smh])$/.exec(w)
  if (!m) return null
  const s = Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1)
  return s >= 1 && s <= 24 * 3600 ? s : null
}
