/**
 * Uploaded files in the ObjectStore, tenant-scoped. Pure functions over the
 * ObjectStore port (no Hono, no Node-only imports), shared by the Files API
 * routes, the batch workers (inputs, outputs) and fine-tuning (training files):
 *
 *   files/<tenant>/<id>            the bytes, as uploaded
 *   file-meta/<tenant>/<id>.json   the file object (OpenAI's shape, below)
 *
 * `<tenant>` is percent-encoded (object-records.ts `encodeSegment`). The bytes
 * are written before the record, so a listed file always has its content;
 * another tenant's id has no record under its prefix and reads as missing.
 *
 *   const f = await getFileObject(store, tenant, 'file-…')   // null: no such file for this tenant
 *   const text = await readFileText(store, tenant, 'file-…') // the content as UTF-8
 */
import { encodeSegment, getJson, listAll } from '../adapters/object-records.js'
import { newId } from '../ids.js'
import type { ObjectStore } from '../ports/object-store.js'

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

export interface NewFile {
  filename: string
  purpose: FilePurpose
  content: Uint8Array | string
  /** A chosen id (e.g. a batch's output file); default a new one. */
  id?: string
  contentType?: string
}

/** Stores the bytes, then the record; returns the record. Overwrites a file of the same id. */
export async function createFile(store: ObjectStore, tenant: string, f: NewFile): Promise<FileObject> {
  const id = f.id ?? newFileId()
  if (!FILE_ID_PATTERN.test(id)) throw new Error(`createFile: bad file id '${id}'`)
  const bytes = typeof f.content === 'string' ? new TextEncoder().encode(f.content) : f.content
  await store.put(fileContentKey(tenant, id), bytes, {
    contentType: f.contentType ?? 'application/jsonl',
  })
  const record: FileObject = {
    id,
    object: 'file',
    bytes: bytes.byteLength,
    created_at: Math.floor(Date.now() / 1000),
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed',
    status_details: null,
    expires_at: null,
  }
  await store.put(fileMetaKey(tenant, id), JSON.stringify(record), { contentType: 'application/json' })
  return record
}

/** The file object, or null when the tenant has no such file. */
export async function getFileObject(
  store: ObjectStore,
  tenant: string,
  id: string,
): Promise<FileObject | null> {
  if (!FILE_ID_PATTERN.test(id)) return null
  return getJson<FileObject>(store, fileMetaKey(tenant, id))
}

/** The file's bytes, or null when the tenant has no such file. */
export async function readFile(store: ObjectStore, tenant: string, id: string): Promise<Uint8Array | null> {
  if (!(await getFileObject(store, tenant, id))) return null
  return store.get(fileContentKey(tenant, id))
}

/** The file's bytes as a stream (large downloads), or null. */
export async function readFileStream(
  store: ObjectStore,
  tenant: string,
  id: string,
): Promise<ReadableStream<Uint8Array> | null> {
  if (!(await getFileObject(store, tenant, id))) return null
  return store.getStream(fileContentKey(tenant, id))
}

/** The file's content as UTF-8 text, or null. */
export async function readFileText(store: ObjectStore, tenant: string, id: string): Promise<string | null> {
  const bytes = await readFile(store, tenant, id)
  return bytes ? new TextDecoder().decode(bytes) : null
}

/** Deletes record then bytes. Returns false when there was no such file. */
export async function deleteFile(store: ObjectStore, tenant: string, id: string): Promise<boolean> {
  if (!(await getFileObject(store, tenant, id))) return false
  await store.delete(fileMetaKey(tenant, id))
  await store.delete(fileContentKey(tenant, id))
  return true
}

export interface ListFilesOptions {
  purpose?: FilePurpose
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
    if (!f || (o.purpose && f.purpose !== o.purpose)) continue
    if (data.length === limit) {
      hasMore = true
      break
    }
    data.push(f)
  }
  return { data, hasMore }
}
