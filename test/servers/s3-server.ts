/**
 * An S3 server for tests: s3rver (an S3-protocol server on npm) on a free port
 * of 127.0.0.1 with a temporary folder and one bucket, started and stopped by
 * the test itself. Clients use path-style URLs and `credentials`.
 *
 * s3rver ignores If-None-Match and If-Match on writes, which S3 enforces
 * (conditional writes: If-None-Match since August 2024, If-Match since
 * November 2024, on PutObject and CompleteMultipartUpload; 412
 * PreconditionFailed when the condition does not hold,
 * 404 NoSuchKey for If-Match on a missing key). This server enforces them in
 * front of s3rver: conditional PUTs of one key are serialized, the current
 * ETag is read from s3rver's store, and a failed condition is answered with
 * S3's error instead of being forwarded. So a test passes only when the
 * client really sends the headers. Pass `conditionalWrites: false` for plain
 * s3rver behaviour.
 *
 * s3rver also lists keys in the order of its folder walk (`a/b` before `a`)
 * and cuts a page before sorting, so pages skip keys (S3 lists in UTF-8
 * binary order), and its continuation tokens need DES, which Node 20's
 * OpenSSL 3 no longer offers (a truncated page is a 500). So ListObjectsV2
 * (GET /<bucket>?list-type=2, no delimiter) is answered here from s3rver's
 * store: the prefix's keys, sorted, after StartAfter or ContinuationToken,
 * at most MaxKeys. (This route skips signature checks.)
 *
 * Last, s3rver rewrites an object's file in place, so a GET racing a PUT of
 * the same key can fail mid-body; S3 replaces objects atomically (a read sees
 * the old or the new object). Requests on one object are served one at a
 * time here.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { finished } from 'node:stream/promises'
import { S3ObjectStore, type S3ObjectStoreOptions } from '../../core/adapters/s3-store.js'

export interface S3Server {
  endpoint: string
  bucket: string
  region: string
  credentials: { accessKeyId: string; secretAccessKey: string }
  stop(): Promise<void>
}

/** Our S3 adapter as a client of `server` (path-style, its credentials); `options` add a prefix and the like. */
export function s3StoreOf(
  server: S3Server,
  options: Omit<
    S3ObjectStoreOptions,
    'bucket' | 'region' | 'endpoint' | 'forcePathStyle' | 'credentials'
  > = {},
): S3ObjectStore {
  return new S3ObjectStore({
    bucket: server.bucket,
    region: server.region,
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: server.credentials,
    ...options,
  })
}

export interface S3ServerOptions {
  /** Enforce If-None-Match / If-Match on PutObject as S3 does. Default true. */
  conditionalWrites?: boolean
}

interface ListResult {
  objects: Array<{ key: string; size: number; lastModifiedDate: Date; metadata: { etag: string } }>
  commonPrefixes: string[]
  isTruncated: boolean
}
interface ListOptions {
  delimiter?: string
  startAfter?: string
  prefix?: string
  maxKeys?: number
}
interface S3rverInstance {
  configureBuckets(): Promise<void>
  callback(): (req: IncomingMessage, res: ServerResponse) => void
  store: {
    getMetadata(bucket: string, key: string): Promise<{ etag: string }>
    listObjects(bucket: string, options: ListOptions): Promise<ListResult>
  }
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance

const REGION = 'us-east-1'
// s3rver checks signatures against this fixed key pair.
const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }

const unquote = (etag: string) => etag.replace(/^"(.*)"$/, '$1')
const xml = (s: string) =>
  s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!)

function s3Error(res: ServerResponse, status: number, code: string, message: string) {
  res.statusCode = status
  res.setHeader('content-type', 'application/xml')
  res.end(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`,
  )
}

export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass
  const directory = await mkdtemp(join(tmpdir(), 'pgpt-s3rver-'))
  const bucket = 'pgpt-test'
  const app = new S3rver({ silent: true, directory, configureBuckets: [{ name: bucket, configs: [] }] })
  await app.configureBuckets()
  const handle = app.callback()

  const queues = new Map<string, Promise<void>>()
  /** Runs fn after every earlier fn of the same key (a per-key mutex). */
  const serialized = (key: string, fn: () => Promise<void>) => {
    const run = (queues.get(key) ?? Promise.resolve()).then(fn, fn)
    const tail = run.catch(() => {})
    queues.set(key, tail)
    void tail.then(() => {
      if (queues.get(key) === tail) queues.delete(key)
    })
    return run
  }

  const conditionalPut = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const [, b, ...rest] = path.split('/')
    const key = decodeURIComponent(rest.join('/'))
    const ifNoneMatch = req.headers['if-none-match']
    const ifMatch = req.headers['if-match']
    await serialized(`${b}/${key}`, async () => {
      const current = await app.store.getMetadata(decodeURIComponent(b), key).then(
        (m) => unquote(m.etag),
        () => null,
      )
      if (ifNoneMatch !== undefined && (ifNoneMatch !== '*' || current !== null)) {
        req.resume()
        return s3Error(
          res,
          412,
          'PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold',
        )
      }
      if (ifMatch !== undefined && current === null) {
        req.resume()
        return s3Error(res, 404, 'NoSuchKey', 'The specified key does not exist.')
      }
      if (ifMatch !== undefined && unquote(ifMatch) !== current) {
        req.resume()
        return s3Error(
          res,
          412,
          'PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold',
        )
      }
      handle(req, res)
      await finished(res).catch(() => {})
    })
  }

  const listV2 = async (
    req: IncomingMessage,
    res: ServerResponse,
    bucketName: string,
    q: URLSearchParams,
  ) => {
    const prefix = q.get('prefix') ?? ''
    const token = q.get('continuation-token')
    const after = Buffer.from(
      token ? Buffer.from(token, 'base64url').toString('utf8') : (q.get('start-after') ?? ''),
    )
    const max = Math.min(1000, Number(q.get('max-keys') ?? 1000))
    const all = await app.store.listObjects(bucketName, { prefix })
    const sorted = all.objects
      .map((obj) => ({ obj, bytes: Buffer.from(obj.key) }))
      .sort((x, y) => Buffer.compare(x.bytes, y.bytes))
      .filter((x) => Buffer.compare(x.bytes, after) > 0)
    const page = sorted.slice(0, max).map((x) => x.obj)
    const truncated = sorted.length > max
    const contents = page
      .map(
        (o) =>
          `<Contents><Key>${xml(o.key)}</Key><LastModified>${o.lastModifiedDate.toISOString()}</LastModified>` +
          `<ETag>${xml(o.metadata.etag)}</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
      )
      .join('')
    const next = truncated
      ? `<NextContinuationToken>${Buffer.from(page.at(-1)!.key).toString('base64url')}</NextContinuationToken>`
      : ''
    req.resume()
    res.setHeader('content-type', 'application/xml')
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Name>${xml(bucketName)}</Name><Prefix>${xml(prefix)}</Prefix><KeyCount>${page.length}</KeyCount>` +
        `<MaxKeys>${max}</MaxKeys><IsTruncated>${truncated}</IsTruncated>${next}${contents}</ListBucketResult>`,
    )
  }

  const enforce = options.conditionalWrites ?? true
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const onlyBucket = /^\/[^/]+\/?$/.test(url.pathname)
    if (
      req.method === 'GET' &&
      onlyBucket &&
      url.searchParams.get('list-type') === '2' &&
      !url.searchParams.get('delimiter')
    ) {
      const name = decodeURIComponent(url.pathname.split('/')[1])
      listV2(req, res, name, url.searchParams).catch((err) =>
        s3Error(res, 500, 'InternalError', xml(String(err))),
      )
      return
    }
    const conditional = req.headers['if-none-match'] !== undefined || req.headers['if-match'] !== undefined
    // PutObject, or CompleteMultipartUpload (POST ?uploadId=), which S3 also conditions.
    const write =
      (req.method === 'PUT' && !req.headers['x-amz-copy-source'] && !url.searchParams.has('uploadId')) ||
      (req.method === 'POST' && url.searchParams.has('uploadId'))
    if (enforce && write && conditional) {
      conditionalPut(req, res).catch((err) => s3Error(res, 500, 'InternalError', String(err)))
      return
    }
    // One object's reads and writes take turns (parts of a multipart upload are not the object yet).
    const [, b, ...rest] = url.pathname.split('/')
    const objectRequest = rest.length > 0 && !url.searchParams.has('uploadId') && req.method !== 'POST'
    if (objectRequest) {
      const key = `${b}/${decodeURIComponent(rest.join('/'))}`
      void serialized(key, async () => {
        handle(req, res)
        await finished(res).catch(() => {})
      })
      return
    }
    handle(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo

  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    region: REGION,
    credentials: CREDENTIALS,
    async stop() {
      server.closeAllConnections()
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())))
      await rm(directory, { recursive: true, force: true })
    },
  }
}
