/**
 * ObjectStore over a Workers R2 bucket binding, so the edge on Workers reads
 * model manifests (and tokenizers) from the same bucket the workers use
 * (R2 speaks S3). Conditional puts map to R2's onlyIf.
 */
import {
  type Body,
  type ListOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  PreconditionFailedError,
  type PutOptions,
} from '../../core/ports/object-store.js'

/** The slice of R2Bucket used here. */
export interface R2BucketLike {
  get(key: string): Promise<{ arrayBuffer(): Promise<ArrayBuffer>; body: ReadableStream } | null>
  head(key: string): Promise<R2ObjectLike | null>
  put(key: string, value: unknown, options?: unknown): Promise<R2ObjectLike | null>
  list(options?: { prefix?: string; cursor?: string; limit?: number }): Promise<{
    objects: R2ObjectLike[]
    truncated: boolean
    cursor?: string
  }>
  delete(key: string): Promise<void>
}

interface R2ObjectLike {
  key: string
  size: number
  etag: string
  httpEtag?: string
  uploaded: Date
  httpMetadata?: { contentType?: string }
  customMetadata?: Record<string, string>
}

const info = (o: R2ObjectLike): ObjectInfo => ({
  key: o.key,
  size: o.size,
  etag: o.etag,
  lastModified: o.uploaded,
  contentType: o.httpMetadata?.contentType,
  metadata: o.customMetadata,
})

export class R2ObjectStore implements ObjectStore {
  readonly name = 'r2'
  readonly supportsConditionalPut = true

  constructor(private readonly bucket: R2BucketLike) {}

  async get(key: string): Promise<Uint8Array | null> {
    const o = await this.bucket.get(key)
    return o ? new Uint8Array(await o.arrayBuffer()) : null
  }

  async getStream(key: string): Promise<ReadableStream<Uint8Array> | null> {
    return ((await this.bucket.get(key))?.body as ReadableStream<Uint8Array> | undefined) ?? null
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const o = await this.bucket.head(key)
    return o ? info(o) : null
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<{ etag: string }> {
    // R2 checks the condition and writes atomically; '*' is If-None-Match: * (create-once).
    const onlyIf =
      options.ifNoneMatch === '*'
        ? { etagDoesNotMatch: '*' }
        : options.ifMatch !== undefined
          ? { etagMatches: options.ifMatch.replace(/^"|"$/g, '') }
          : undefined
    const res = await this.bucket.put(key, body, {
      httpMetadata: options.contentType ? { contentType: options.contentType } : undefined,
      customMetadata: options.metadata,
      ...(onlyIf ? { onlyIf } : {}),
    })
    if (!res) throw new PreconditionFailedError(key)
    return { etag: res.etag }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const page = await this.bucket.list({ prefix, cursor: options.cursor, limit: options.limit ?? 1000 })
    return { objects: page.objects.map(info), cursor: page.truncated ? page.cursor : undefined }
  }

  async delete(key: string): Promise<void> {
    await this.bucket.delete(key)
  }
}
