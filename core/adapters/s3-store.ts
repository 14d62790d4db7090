/**
 * ObjectStore on Amazon S3 or any S3 endpoint (R2, MinIO, s3rver): the
 * production adapter of the ObjectStore port (core/ports/object-store.ts).
 *
 * Conditional puts. S3 enforces If-None-Match (Aug 2024) and If-Match
 * (Nov 2024) on PutObject, and this adapter sends them, mapping 412 (and 409
 * ConditionalRequestConflict, and 404 for If-Match on a missing key) to
 * PreconditionFailedError. Some S3-compatible servers accept the headers and
 * ignore them; there, construct with `conditionalPut: false`: the store then
 * says `supportsConditionalPut: false` and refuses a conditional put with an
 * error, because writing unconditionally would silently break create-once and
 * compare-and-swap. The contract suite runs both ways: with `true` against a
 * server that enforces the headers (so it fails if the adapter does not send
 * them), and with `false`.
 *
 * Listing uses ListObjectsV2 (key order); the cursor is S3's opaque
 * ContinuationToken.
 *
 * ETags are returned without S3's quotes. A string or byte body is one
 * PutObject. A ReadableStream body is read one part at a time: if it ends
 * within the first part it is one PutObject, otherwise a multipart upload
 * (parts of `partSizeBytes`, the conditions on CompleteMultipartUpload, as S3
 * supports; aborted on any error), so memory stays at one part.
 * `@aws-sdk/client-s3` is imported on first use. References: unstorage
 * `src/drivers/s3.ts`.
 */
import type { S3Client } from '@aws-sdk/client-s3'
import {
  type Body,
  type ListOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  PreconditionFailedError,
  type PutOptions,
} from '../ports/object-store.js'
import { createError } from './adapter-error.js'

export const S3_STORE = 's3-store'

export interface S3ObjectStoreOptions {
  bucket: string
  region: string
  /** Another S3 endpoint (R2, MinIO, s3rver); default AWS. */
  endpoint?: string
  /** Path-style URLs (`endpoint/bucket/key`), needed by most non-AWS servers. Default false. */
  forcePathStyle?: boolean
  /** Default: the SDK's provider chain (env, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Prepended to every key, e.g. `pgpt/`; list results have it removed. */
  prefix?: string
  /** Whether the backend enforces If-None-Match/If-Match. Default true (AWS S3). */
  conditionalPut?: boolean
  /** Part size of multipart uploads of streamed bodies, in bytes (S3: at least 5 MiB). Default 8 MiB. */
  partSizeBytes?: number
}

const MIN_PART = 5 * 1024 * 1024

type Sdk = typeof import('@aws-sdk/client-s3')

const unquote = (etag: string | undefined) => (etag ?? '').replace(/^"(.*)"$/, '$1')

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode
}

const isNotFound = (err: unknown) => {
  const name = (err as { name?: string })?.name
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404
}

/** Reads a stream in parts of `size` bytes (the last one shorter). */
async function* parts(stream: ReadableStream<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let chunks: Uint8Array[] = []
  let have = 0
  for await (const c of stream as unknown as AsyncIterable<Uint8Array>) {
    chunks.push(c)
    have += c.byteLength
    while (have >= size) {
      const all = Buffer.concat(chunks)
      yield all.subarray(0, size)
      chunks = [all.subarray(size)]
      have -= size
    }
  }
  if (have > 0 || chunks.length === 0) yield Buffer.concat(chunks)
}

export class S3ObjectStore implements ObjectStore {
  readonly name = S3_STORE
  readonly supportsConditionalPut: boolean
  private readonly options: S3ObjectStoreOptions
  private readonly prefix: string
  private readonly partSize: number
  private client: Promise<{ sdk: Sdk; client: S3Client }> | undefined

  constructor(options: S3ObjectStoreOptions) {
    if (!options.bucket) throw createError(S3_STORE, 'bucket is required')
    if (!options.region) throw createError(S3_STORE, 'region is required')
    this.options = options
    this.prefix = options.prefix ?? ''
    this.supportsConditionalPut = options.conditionalPut ?? true
    this.partSize = options.partSizeBytes ?? 8 * 1024 * 1024
    if (!Number.isInteger(this.partSize) || this.partSize < MIN_PART)
      throw createError(S3_STORE, `partSizeBytes must be an integer >= ${MIN_PART}`)
  }

  /** The SDK and its client, loaded on first use. */
  private sdk(): Promise<{ sdk: Sdk; client: S3Client }> {
    this.client ??= import('@aws-sdk/client-s3').then((sdk) => ({
      sdk,
      client: new sdk.S3Client({
        region: this.options.region,
        endpoint: this.options.endpoint,
        forcePathStyle: this.options.forcePathStyle,
        credentials: this.options.credentials,
        // Checksums only where S3 requires them: S3-compatible servers differ on the newer ones.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      }),
    }))
    return this.client
  }

  private keyOf(key: string): string {
    if (typeof key !== 'string' || key.length === 0)
      throw createError(S3_STORE, 'key must be a non-empty string')
    return this.prefix + key
  }

  async get(key: string): Promise<Uint8Array | null> {
    const { sdk, client } = await this.sdk()
    try {
      const out = await client.send(
        new sdk.GetObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }),
      )
      return out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0)
    } catch (err) {
      if (isNotFound(err)) return null
      throw createError(S3_STORE, `get '${key}' failed`, { cause: err })
    }
  }

  async getStream(key: string): Promise<ReadableStream<Uint8Array> | null> {
    const { sdk, client } = await this.sdk()
    try {
      const out = await client.send(
        new sdk.GetObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }),
      )
      if (!out.Body) return new ReadableStream({ start: (c) => c.close() })
      return out.Body.transformToWebStream() as ReadableStream<Uint8Array>
    } catch (err) {
      if (isNotFound(err)) return null
      throw createError(S3_STORE, `getStream '${key}' failed`, { cause: err })
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const { sdk, client } = await this.sdk()
    try {
      const out = await client.send(
        new sdk.HeadObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }),
      )
      return {
        key,
        size: out.ContentLength ?? 0,
        etag: unquote(out.ETag),
        lastModified: out.LastModified ?? new Date(0),
        ...(out.ContentType !== undefined ? { contentType: out.ContentType } : {}),
        ...(out.Metadata && Object.keys(out.Metadata).length > 0 ? { metadata: out.Metadata } : {}),
      }
    } catch (err) {
      if (isNotFound(err)) return null
      throw createError(S3_STORE, `head '${key}' failed`, { cause: err })
    }
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<{ etag: string }> {
    const conditional = options.ifNoneMatch !== undefined || options.ifMatch !== undefined
    if (conditional && !this.supportsConditionalPut)
      throw createError(
        S3_STORE,
        `put '${key}': conditional puts are disabled for this backend (conditionalPut: false)`,
      )
    const Key = this.keyOf(key)
    const conditions = {
      IfNoneMatch: options.ifNoneMatch,
      IfMatch: options.ifMatch === undefined ? undefined : `"${unquote(options.ifMatch)}"`,
    }
    try {
      if (typeof body === 'string' || body instanceof Uint8Array) {
        const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body
        return await this.putOnce(Key, bytes, options, conditions)
      }
      const it = parts(body, this.partSize)
      const first = await it.next()
      const firstPart = first.done ? Buffer.alloc(0) : first.value
      if (firstPart.length < this.partSize) {
        await it.return(undefined)
        return await this.putOnce(Key, firstPart, options, conditions)
      }
      return await this.putMultipart(Key, firstPart, it, options, conditions)
    } catch (err) {
      const status = statusOf(err)
      // 412: the condition failed; 409: a concurrent conditional write won; 404: If-Match on a missing key.
      if (
        conditional &&
        (status === 412 || status === 409 || (options.ifMatch !== undefined && status === 404))
      )
        throw new PreconditionFailedError(key)
      throw createError(S3_STORE, `put '${key}' failed`, { cause: err })
    }
  }

  private async putOnce(
    Key: string,
    bytes: Uint8Array,
    options: PutOptions,
    conditions: { IfNoneMatch?: string; IfMatch?: string },
  ): Promise<{ etag: string }> {
    const { sdk, client } = await this.sdk()
    const out = await client.send(
      new sdk.PutObjectCommand({
        Bucket: this.options.bucket,
        Key,
        Body: bytes,
        ContentLength: bytes.byteLength,
        ContentType: options.contentType,
        Metadata: options.metadata,
        ...conditions,
      }),
    )
    return { etag: unquote(out.ETag) }
  }

  private async putMultipart(
    Key: string,
    firstPart: Buffer,
    rest: AsyncGenerator<Buffer>,
    options: PutOptions,
    conditions: { IfNoneMatch?: string; IfMatch?: string },
  ): Promise<{ etag: string }> {
    const { sdk, client } = await this.sdk()
    const Bucket = this.options.bucket
    const { UploadId } = await client.send(
      new sdk.CreateMultipartUploadCommand({
        Bucket,
        Key,
        ContentType: options.contentType,
        Metadata: options.metadata,
      }),
    )
    if (!UploadId) throw createError(S3_STORE, `CreateMultipartUpload '${Key}' returned no UploadId`)
    try {
      const done: Array<{ PartNumber: number; ETag: string }> = []
      const upload = async (part: Buffer) => {
        const PartNumber = done.length + 1
        const out = await client.send(
          new sdk.UploadPartCommand({
            Bucket,
            Key,
            UploadId,
            PartNumber,
            Body: part,
            ContentLength: part.length,
          }),
        )
        done.push({ PartNumber, ETag: out.ETag ?? '' })
      }
      await upload(firstPart)
      for await (const part of rest) if (part.length > 0) await upload(part)
      const out = await client.send(
        new sdk.CompleteMultipartUploadCommand({
          Bucket,
          Key,
          UploadId,
          MultipartUpload: { Parts: done },
          ...conditions,
        }),
      )
      return { etag: unquote(out.ETag) }
    } catch (err) {
      await client.send(new sdk.AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => {})
      throw err
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const limit = options.limit ?? 1000
    if (!Number.isInteger(limit) || limit < 1) throw createError(S3_STORE, 'limit must be a positive integer')
    const { sdk, client } = await this.sdk()
    try {
      const out = await client.send(
        new sdk.ListObjectsV2Command({
          Bucket: this.options.bucket,
          Prefix: this.prefix + prefix,
          MaxKeys: Math.min(limit, 1000),
          ContinuationToken: options.cursor,
        }),
      )
      const objects: ObjectInfo[] = (out.Contents ?? []).map((o) => ({
        key: (o.Key ?? '').slice(this.prefix.length),
        size: o.Size ?? 0,
        etag: unquote(o.ETag),
        lastModified: o.LastModified ?? new Date(0),
      }))
      return {
        objects,
        ...(out.IsTruncated && out.NextContinuationToken ? { cursor: out.NextContinuationToken } : {}),
      }
    } catch (err) {
      throw createError(S3_STORE, `list '${prefix}' failed`, { cause: err })
    }
  }

  async delete(key: string): Promise<void> {
    const { sdk, client } = await this.sdk()
    try {
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }))
    } catch (err) {
      if (isNotFound(err)) return
      throw createError(S3_STORE, `delete '${key}' failed`, { cause: err })
    }
  }

  async close(): Promise<void> {
    const made = this.client
    this.client = undefined
    if (made) (await made).client.destroy()
  }
}
