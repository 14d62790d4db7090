/**
 * ObjectStore port: keys to bytes, the shape of S3. Model artifacts, uploaded
 * files, batch outputs and results live here. Keys use `/` as a separator.
 */

export interface ObjectInfo {
  key: string
  size: number
  /** Opaque version tag; changes on every write. */
  etag: string
  lastModified: Date
  contentType?: string
  metadata?: Record<string, string>
}

export interface PutOptions {
  contentType?: string
  metadata?: Record<string, string>
  /** Write only if no object exists at the key (create-once). */
  ifNoneMatch?: '*'
  /** Write only if the current object's etag matches (compare-and-swap). */
  ifMatch?: string
}

export interface ListOptions {
  /** Continue after a previous page. */
  cursor?: string
  /** Page size, default 1000. */
  limit?: number
}

export interface ListPage {
  objects: ObjectInfo[]
  /** Present when more pages follow. */
  cursor?: string
}

export type Body = Uint8Array | string | ReadableStream<Uint8Array>

export interface ObjectStore {
  readonly name: string
  /** Whether ifNoneMatch/ifMatch are enforced by the backend. */
  readonly supportsConditionalPut: boolean
  get(key: string): Promise<Uint8Array | null>
  getStream(key: string): Promise<ReadableStream<Uint8Array> | null>
  head(key: string): Promise<ObjectInfo | null>
  /** Throws PreconditionFailedError when a condition does not hold. */
  put(key: string, body: Body, options?: PutOptions): Promise<{ etag: string }>
  list(prefix: string, options?: ListOptions): Promise<ListPage>
  /** Deleting a missing key is not an error. */
  delete(key: string): Promise<void>
  close?(): Promise<void>
}

export class PreconditionFailedError extends Error {
  override readonly name = 'PreconditionFailedError'
  constructor(readonly key: string) {
    super(`Precondition failed for object '${key}'`)
  }
}
