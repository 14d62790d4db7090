/**
 * Uploaded files in the ObjectStore, tenant-scoped. Pure functions over the
 * ObjectStore port (no Hono, no Node-only imports), shared by the Files API
 * routes, the batch workers (inputs, outputs) and fine-tuning (training files):
 *
 *   files/<tenant>/<id>            the bytes, as uploaded
 *   file-meta/<tenant>/<id>.json   the file object (OpenAI's shape, below)
 *   file-expiry/<expires ms>~<tenant>~<id>   an empty entry per expiring file (retention)
 *
 * `<tenant>` is percent-encoded (object-records.ts `encodeSegment`). The bytes
 * are written before the record, so a listed file always has its content;
 * another tenant's id has no record under its prefix and reads as missing.
 *
 * Expiry lives in the record (`expires_at`, as OpenAI shows it), so every
 * store honours it alike, with no object tags. A file past its `expires_at`
 * reads as missing at once (every read below takes `now`); the retention sweep
 * (`sweepExpiredFiles`, run by core/retention.ts) deletes its bytes and
 * record later. The expiry entries list oldest first, so a sweep reads only
 * the entries that are due. An entry is written before the bytes and the
 * record: a crash in between leaves an entry the sweep drops (and the bytes
 * with it), never an expiring file without one.
 *
 * Storage caps: every file a tenant stores is an entry (id → bytes) of its
 * `files` ledger (ledger.ts), reserved by compare-and-swap before the bytes
 * are written, so uploads racing on any number of edges store at most the cap
 * (`createFile` with `caps` throws StorageLimitError beyond it). Files written
 * without caps (a batch's output and error files) are counted but never
 * refused: a finished batch's output is not lost. Deletes and the retention
 * sweep release the entry after the file is gone; a failed write releases
 * its reservation. A ledger is seeded from a listing of the tenant's stored
 * bytes the first time it is needed (files stored before it existed); a crash
 * between a delete and its release leaves the file counted until an operator
 * deletes `ledgers/files/<tenant>.json`, which reseeds it.
 *
 *   const f = await getFileObject(store, tenant, 'file-…')   // null: no such file for this tenant
 *   const text = await readFileText(store, tenant, 'file-…') // the content as UTF-8
 */
import { decodeSegment, encodeSegment, getJson, listAll, padTime } from '../adapters/object-records.js'
import { newId } from '../ids.js'
import type { ObjectStore } from '../ports/object-store.js'
import { admit, ledgerTotals, release } from './ledger.js'

/** Purposes a client may upload. */
export const UPLOAD_PURPOSES = ['fine-tune', 'batch'] as const
/** Every purpose a file may have: uploads, and the files batches write. */
export const FILE_PURPOSES = [...UPLOAD_PURPOSES, 'batch_output'] as const
export type FilePurpose = (typeof FILE_PURPOSES)[number]

/** OpenAI's file object. */
export interface FileObject {
  id: string
  object: 'file'
  bytes: number
  /** Unix seconds. */
  created_at: number
  filename: string
  purpose: FilePurpose
  status: 'uploaded' | 'processed' | 'error'
  status_details: string | null
  expires_at: number | null
}

/** `file-` + 21 lowercase letters and digits, time-ordered. */
export const newFileId = () => `file-${newId('f').slice(2)}`
/** What an id must look like before it is used in a key. */
export const FILE_ID_PATTERN = /^file-[a-z0-9]{1,64}$/

export const fileContentKey = (tenant: string, id: string) => `files/${encodeSegment(tenant)}/${id}`
const metaPrefix = (tenant: string) => `file-meta/${encodeSegment(tenant)}/`
export const fileMetaKey = (tenant: string, id: string) => `${metaPrefix(tenant)}${id}.json`
const EXPIRY_PREFIX = 'file-expiry/'
const expiryKey = (tenant: string, id: string, expiresAt: number) =>
  `${EXPIRY_PREFIX}${padTime(expiresAt * 1000)}~${encodeSegment(tenant)}~${id}`

/** OpenAI's bounds of `expires_after.seconds` (POST /v1/files): one hour to 30 days. */
export const MIN_EXPIRES_AFTER_S = 3600
export const MAX_EXPIRES_AFTER_S = 30 * 86400

/** Whether the file is past its `expires_at` at `now` (epoch ms). */
export const isFileExpired = (f: Pick<FileObject, 'expires_at'>, now = Date.now()) =>
  f.expires_at !== null && f.expires_at * 1000 <= now

export interface NewFile {
  filename: string
  purpose: FilePurpose
  content: Uint8Array | string
  /** A chosen id (e.g. a batch's output file); default a new one. */
  id?: string
  contentType?: string
  /** Seconds from creation to expiry (`expires_at`); null or absent: the file never expires. */
  expiresAfterS?: number | null
}

/** The per-tenant storage caps of `createFile`. */
export interface StorageCaps {
  maxFiles: number
  maxBytes: number
}

/** A file refused by the tenant's storage caps: what the tenant stores besides it, and which cap it passes. */
export class StorageLimitError extends Error {
  override readonly name = 'StorageLimitError'
  constructor(
    readonly held: FileUsage,
    readonly bytes: number,
    readonly over: 'files' | 'bytes',
    readonly caps: StorageCaps,
  ) {
    super(`storage cap of ${over} reached: ${held.files} files, ${held.bytes} bytes stored`)
  }
}

const FILES_LEDGER = 'files'

/** The tenant's stored files by id → bytes, from a listing of its content prefix (the ledger's seed). */
async function listStoredBytes(store: ObjectStore, tenant: string): Promise<Record<string, number>> {
  const prefix = `files/${encodeSegment(tenant)}/`
  const out: Record<string, number> = {}
  let cursor: string | undefined
  do {
    const page = await store.list(prefix, cursor === undefined ? {} : { cursor })
    for (const o of page.objects) out[o.key.slice(prefix.length)] = o.size
    cursor = page.cursor
  } while (cursor !== undefined)
  return out
}

/** Releases a file's share of the tenant's storage caps (after it is gone). */
const releaseFile = (store: ObjectStore, tenant: string, id: string) =>
  release(store, FILES_LEDGER, tenant, [id])

/**
 * Stores the expiry entry (when the file expires), the bytes, then the record;
 * returns the record. Overwrites a file of the same id. `now`: epoch ms.
 * The file is first reserved in the tenant's storage ledger: with `caps`, a
 * file beyond them throws StorageLimitError and nothing is stored; without,
 * it is counted and never refused.
 */
export async function createFile(
  store: ObjectStore,
  tenant: string,
  f: NewFile,
  now = Date.now(),
  caps?: StorageCaps,
): Promise<FileObject> {
  const id = f.id ?? newFileId()
  if (!FILE_ID_PATTERN.test(id)) throw new Error(`createFile: bad file id '${id}'`)
  const after = f.expiresAfterS ?? null
  if (after !== null && !(Number.isInteger(after) && after > 0))
    throw new Error(`createFile: expiresAfterS must be a positive integer, got ${after}`)
  const bytes = typeof f.content === 'string' ? new TextEncoder().encode(f.content) : f.content
  const a = await admit(
    store,
    FILES_LEDGER,
    tenant,
    { id, weight: bytes.byteLength },
    {
      now,
      seed: () => listStoredBytes(store, tenant),
      ...(caps ? { caps: { maxEntries: caps.maxFiles, maxWeight: caps.maxBytes } } : {}),
    },
  )
  if (!a.ok)
    throw new StorageLimitError(
      { files: a.held.entries, bytes: a.held.weight },
      bytes.byteLength,
      a.over === 'entries' ? 'files' : 'bytes',
      caps!,
    )
  try {
    return await writeFile(store, tenant, id, f, bytes, after, now)
  } catch (err) {
    // A new file that could not be written gives its reservation back (a rewrite keeps the old file's).
    if (f.id === undefined) await releaseFile(store, tenant, id).catch(() => {})
    throw err
  }
}

async function writeFile(
  store: ObjectStore,
  tenant: string,
  id: string,
  f: NewFile,
  bytes: Uint8Array,
  after: number | null,
  now: number,
): Promise<FileObject> {
  const createdAt = Math.floor(now / 1000)
  const expiresAt = after === null ? null : createdAt + after
  if (expiresAt !== null) await store.put(expiryKey(tenant, id, expiresAt), '')
  await store.put(fileContentKey(tenant, id), bytes, {
    contentType: f.contentType ?? 'application/jsonl',
  })
  const record: FileObject = {
    id,
    object: 'file',
    bytes: bytes.byteLength,
    created_at: createdAt,
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed',
    status_details: null,
    expires_at: expiresAt,
  }
  await store.put(fileMetaKey(tenant, id), JSON.stringify(record), { contentType: 'application/json' })
  return record
}

/** What a tenant's stored files take: how many, and their bytes. */
export interface FileUsage {
  files: number
  bytes: number
}

/**
 * What the tenant's storage caps count (every purpose, batch outputs included,
 * expired files until the retention sweep deletes them, and uploads under
 * way): its ledger, or a listing of its stored bytes before it has one.
 */
export async function fileUsage(store: ObjectStore, tenant: string): Promise<FileUsage> {
  const held = await ledgerTotals(store, FILES_LEDGER, tenant)
  if (held) return { files: held.entries, bytes: held.weight }
  const sizes = Object.values(await listStoredBytes(store, tenant))
  return { files: sizes.length, bytes: sizes.reduce((a, b) => a + b, 0) }
}

/** The stored record, expired or not (null when there is none): for telling "expired" from "missing". */
export async function getFileRecord(
  store: ObjectStore,
  tenant: string,
  id: string,
): Promise<FileObject | null> {
  if (!FILE_ID_PATTERN.test(id)) return null
  return getJson<FileObject>(store, fileMetaKey(tenant, id))
}

/** The file object, or null when the tenant has no such file or it has expired at `now` (epoch ms). */
export async function getFileObject(
  store: ObjectStore,
  tenant: string,
  id: string,
  now = Date.now(),
): Promise<FileObject | null> {
  const f = await getFileRecord(store, tenant, id)
  return f && !isFileExpired(f, now) ? f : null
}

/** The file's bytes, or null when the tenant has no such file (or it has expired). */
export async function readFile(
  store: ObjectStore,
  tenant: string,
  id: string,
  now = Date.now(),
): Promise<Uint8Array | null> {
  if (!(await getFileObject(store, tenant, id, now))) return null
  return store.get(fileContentKey(tenant, id))
}

/** The file's bytes as a stream (large downloads), or null. */
export async function readFileStream(
  store: ObjectStore,
  tenant: string,
  id: string,
  now = Date.now(),
): Promise<ReadableStream<Uint8Array> | null> {
  if (!(await getFileObject(store, tenant, id, now))) return null
  return store.getStream(fileContentKey(tenant, id))
}

/** The file's content as UTF-8 text, or null. */
export async function readFileText(
  store: ObjectStore,
  tenant: string,
  id: string,
  now = Date.now(),
): Promise<string | null> {
  const bytes = await readFile(store, tenant, id, now)
  return bytes ? new TextDecoder().decode(bytes) : null
}

/** Deletes record then bytes, then releases the file's share of the storage caps. Returns false when there was no such file (or it has expired: the sweep takes it). */
export async function deleteFile(
  store: ObjectStore,
  tenant: string,
  id: string,
  now = Date.now(),
): Promise<boolean> {
  const f = await getFileObject(store, tenant, id, now)
  if (!f) return false
  await store.delete(fileMetaKey(tenant, id))
  await store.delete(fileContentKey(tenant, id))
  if (f.expires_at !== null) await store.delete(expiryKey(tenant, id, f.expires_at))
  await releaseFile(store, tenant, id)
  return true
}

export interface SweptFiles {
  /** `<tenant>/<id>` of each file deleted. */
  deleted: string[]
  /** True when the sweep stopped at its limit with more due. */
  more: boolean
}

/**
 * Retention: deletes the files whose `expires_at` is at or before `now`
 * (epoch ms) — bytes, then record, then the expiry entry, so a crash leaves
 * an expired record (invisible to reads) that the next sweep finishes — and
 * drops stale entries (a file deleted or rewritten since). At most `limit`
 * files per call (default 1000).
 */
export async function sweepExpiredFiles(
  store: ObjectStore,
  o: { now?: number; limit?: number } = {},
): Promise<SweptFiles> {
  const now = o.now ?? Date.now()
  const limit = o.limit ?? 1000
  const out: SweptFiles = { deleted: [], more: false }
  for await (const key of listAll(store, EXPIRY_PREFIX)) {
    const [time, tenantPart, id] = key.slice(EXPIRY_PREFIX.length).split('~')
    if (tenantPart === undefined || id === undefined) {
      await store.delete(key) // not an entry this module writes
      continue
    }
    if (Number(time) > now) break // oldest first: nothing further is due
    if (out.deleted.length >= limit) {
      out.more = true
      break
    }
    const tenant = decodeSegment(tenantPart)
    const f = await getFileRecord(store, tenant, id)
    // The record's own expiry decides: no record (deleted, or a crash before it was written) or expired → delete.
    if (!f || (isFileExpired(f, now) && padTime(f.expires_at! * 1000) === time)) {
      await store.delete(fileContentKey(tenant, id))
      await store.delete(fileMetaKey(tenant, id))
      await releaseFile(store, tenant, id)
      if (f) out.deleted.push(`${tenant}/${id}`)
    }
    await store.delete(key)
  }
  return out
}

export interface ListFilesOptions {
  purpose?: FilePurpose
  /** Epoch ms: files expired by then are left out. Default Date.now(). */
  now?: number
  /** Cursor: the last id of the previous page. */
  after?: string
  /** Default 20. */
  limit?: number
  /** By creation time; default desc (newest first), as OpenAI. */
  order?: 'asc' | 'desc'
}

/**
 * A page of the tenant's files. Ids sort by creation time, so the order is
 * the ids' order; the listing reads every key of the tenant's prefix (files
 * per tenant are few) and only the records of the page (more with a purpose
 * filter, which skips records of other purposes).
 */
export async function listFiles(
  store: ObjectStore,
  tenant: string,
  o: ListFilesOptions = {},
): Promise<{ data: FileObject[]; hasMore: boolean }> {
  const limit = o.limit ?? 20
  const now = o.now ?? Date.now()
  const prefix = metaPrefix(tenant)
  const ids: string[] = []
  for await (const key of listAll(store, prefix)) {
    if (key.endsWith('.json')) ids.push(key.slice(prefix.length, -'.json'.length))
  }
  ids.sort()
  if (o.order !== 'asc') ids.reverse()
  let start = 0
  if (o.after !== undefined) {
    const i = ids.indexOf(o.after)
    start =
      i >= 0
        ? i + 1
        : o.order === 'asc'
          ? ids.findIndex((x) => x > o.after!)
          : ids.findIndex((x) => x < o.after!)
    if (start < 0) start = ids.length
  }
  const data: FileObject[] = []
  let hasMore = false
  for (let i = start; i < ids.length; i++) {
    const f = await getJson<FileObject>(store, fileMetaKey(tenant, ids[i]))
    if (!f || (o.purpose && f.purpose !== o.purpose) || isFileExpired(f, now)) continue
    if (data.length === limit) {
      hasMore = true
      break
    }
    data.push(f)
  }
  return { data, hasMore }
}
