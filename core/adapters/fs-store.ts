/**
 * ObjectStore on a folder: the embedded default of the ObjectStore port
 * (core/ports/object-store.ts), safe for several processes sharing the folder.
 *
 * Layout. A key's `/`-separated segments become folders, each segment escaped
 * (percent-encoding, plus `~`, `.` and `..`), so any key maps to a path inside
 * `root` and keys `a` and `a/b` can both exist. An object is one file,
 * `<segment>~obj`: the bytes, then a trailer
 *
 *   the bytes | header JSON | u32 big-endian header length | "PGPTOBJ1"
 *
 * The header holds size, etag (MD5 of the bytes, as S3's single-part ETag),
 * lastModified, contentType and metadata. Keeping them in the same file as the
 * bytes makes every write one atomic rename (temp file in the same folder,
 * then rename), and a reader that opened the file keeps a consistent
 * snapshot even if a writer replaces it meanwhile. The trailer comes last so
 * a streamed body is written and hashed as it arrives, in constant memory.
 *
 * Writes and deletes of one key are serialized by a lock file
 * (`<segment>~lock`, created with O_EXCL; a lock older than `staleLockMs` is
 * taken over), which makes ifNoneMatch/ifMatch exact across processes.
 * Listing walks the prefix's folder and sorts by key; the cursor is the last
 * key of the previous page (as S3's StartAfter).
 */
import { createHash, randomBytes } from 'node:crypto'
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
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

export const FS_STORE = 'fs-store'

export interface FsObjectStoreOptions {
  /** Folder holding the objects; created if missing. */
  root: string
  /** A write lock older than this is considered abandoned by a crashed process, in ms. Default 30 000. */
  staleLockMs?: number
}

const MAGIC = Buffer.from('PGPTOBJ1')
/** u32 header length + magic, at the very end of the file. */
const TAIL_LEN = 4 + MAGIC.length
const OBJ = '~obj'
const LOCK = '~lock'
const TMP = '~tmp'
/** Bytes of a stream chunk on reads. */
const CHUNK = 256 * 1024
const MAX_KEY_BYTES = 1024

interface Header {
  size: number
  etag: string
  lastModified: number
  contentType?: string
  metadata?: Record<string, string>
}

/** Percent-encodes a key segment so it is a safe file name with no `~` (our marker). */
function encodeSegment(s: string): string {
  if (s === '') return '~'
  if (s === '.') return '%2E'
  if (s === '..') return '%2E%2E'
  return encodeURIComponent(s).replace(/[~!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

function decodeSegment(s: string): string {
  return s === '~' ? '' : decodeURIComponent(s)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The body as chunks, without buffering a stream. */
async function* chunksOf(body: Body): AsyncGenerator<Uint8Array> {
  if (typeof body === 'string') yield Buffer.from(body, 'utf8')
  else if (body instanceof Uint8Array) yield body
  else for await (const c of body as unknown as AsyncIterable<Uint8Array>) yield c
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.byteLength; )
    off += (await fh.write(bytes, off, bytes.byteLength - off)).bytesWritten
}

/** Reads the trailer; the bytes are [0, header.size) of the file. */
async function readHeader(fh: FileHandle, key: string): Promise<Header> {
  const { size } = await fh.stat()
  const tail = Buffer.alloc(TAIL_LEN)
  if (size < TAIL_LEN) throw createError(FS_STORE, `object '${key}' is not in the store's format`)
  await fh.read(tail, 0, TAIL_LEN, size - TAIL_LEN)
  if (!tail.subarray(4).equals(MAGIC))
    throw createError(FS_STORE, `object '${key}' is not in the store's format`)
  const len = tail.readUInt32BE(0)
  const json = Buffer.alloc(len)
  await fh.read(json, 0, len, size - TAIL_LEN - len)
  const header = JSON.parse(json.toString('utf8')) as Header
  if (header.size !== size - TAIL_LEN - len) throw createError(FS_STORE, `object '${key}' is truncated`)
  return header
}

const toInfo = (key: string, h: Header): ObjectInfo => ({
  key,
  size: h.size,
  etag: h.etag,
  lastModified: new Date(h.lastModified),
  ...(h.contentType !== undefined ? { contentType: h.contentType } : {}),
  ...(h.metadata !== undefined ? { metadata: h.metadata } : {}),
})

const isMissing = (err: unknown) => {
  const code = (err as NodeJS.ErrnoException)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

export class FsObjectStore implements ObjectStore {
  readonly name = FS_STORE
  readonly supportsConditionalPut = true
  private readonly root: string
  private readonly staleLockMs: number

  constructor(options: FsObjectStoreOptions) {
    if (!options.root) throw createError(FS_STORE, 'root is required')
    this.root = options.root
    this.staleLockMs = options.staleLockMs ?? 30_000
  }

  /** The object file of a key (and checks the key). */
  private pathOf(key: string): string {
    if (typeof key !== 'string' || key.length === 0)
      throw createError(FS_STORE, 'key must be a non-empty string')
    if (Buffer.byteLength(key) > MAX_KEY_BYTES)
      throw createError(FS_STORE, `key longer than ${MAX_KEY_BYTES} bytes`)
    const segments = key.split('/').map(encodeSegment)
    if (segments.some((s) => s.length > 200))
      throw createError(FS_STORE, `a segment of key '${key}' is too long`)
    segments[segments.length - 1] += OBJ
    return join(this.root, ...segments)
  }

  async get(key: string): Promise<Uint8Array | null> {
    const fh = await this.openObject(key)
    if (!fh) return null
    try {
      const h = await readHeader(fh, key)
      const out = Buffer.alloc(h.size)
      let off = 0
      while (off < h.size) {
        const { bytesRead } = await fh.read(out, off, h.size - off, off)
        if (bytesRead === 0) throw createError(FS_STORE, `object '${key}' is truncated`)
        off += bytesRead
      }
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
    } catch (cause) {
      throw createError(FS_STORE, `get '${key}' failed`, { cause })
    } finally {
      await fh.close()
    }
  }

  async getStream(key: string): Promise<ReadableStream<Uint8Array> | null> {
    const fh = await this.openObject(key)
    if (!fh) return null
    let h: Header
    let pos = 0
    try {
      h = await readHeader(fh, key)
    } catch (cause) {
      await fh.close()
      throw createError(FS_STORE, `getStream '${key}' failed`, { cause })
    }
    let left = h.size
    // Reads from the open handle: a concurrent overwrite (a rename) does not change what this stream yields.
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (left === 0) {
          await fh.close()
          controller.close()
          return
        }
        const buf = Buffer.alloc(Math.min(CHUNK, left))
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
        if (bytesRead === 0) {
          await fh.close()
          controller.error(createError(FS_STORE, `object '${key}' is truncated`))
          return
        }
        pos += bytesRead
        left -= bytesRead
        controller.enqueue(new Uint8Array(buf.buffer, buf.byteOffset, bytesRead))
      },
      async cancel() {
        await fh.close()
      },
    })
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const fh = await this.openObject(key)
    if (!fh) return null
    try {
      return toInfo(key, await readHeader(fh, key))
    } catch (cause) {
      throw createError(FS_STORE, `head '${key}' failed`, { cause })
    } finally {
      await fh.close()
    }
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<{ etag: string }> {
    const file = this.pathOf(key)
    const tmp = `${file}${TMP}${randomBytes(6).toString('hex')}`
    let header: Header
    try {
      await mkdir(dirname(file), { recursive: true })
      const fh = await open(tmp, 'w')
      try {
        const md5 = createHash('md5')
        let size = 0
        for await (const chunk of chunksOf(body)) {
          md5.update(chunk)
          size += chunk.byteLength
          await writeAll(fh, chunk)
        }
        header = {
          size,
          etag: md5.digest('hex'),
          lastModified: Date.now(),
          ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
          ...(options.metadata !== undefined ? { metadata: { ...options.metadata } } : {}),
        }
        const json = Buffer.from(JSON.stringify(header), 'utf8')
        const tail = Buffer.alloc(TAIL_LEN)
        tail.writeUInt32BE(json.length, 0)
        MAGIC.copy(tail, 4)
        await writeAll(fh, Buffer.concat([json, tail]))
        await fh.sync()
      } finally {
        await fh.close()
      }
      await this.withLock(file, async () => {
        if (options.ifNoneMatch === '*' || options.ifMatch !== undefined) {
          const current = await this.head(key)
          if (options.ifNoneMatch === '*' && current) throw new PreconditionFailedError(key)
          if (options.ifMatch !== undefined && current?.etag !== options.ifMatch.replace(/^"(.*)"$/, '$1'))
            throw new PreconditionFailedError(key)
        }
        await rename(tmp, file)
      })
      return { etag: header.etag }
    } catch (err) {
      await rm(tmp, { force: true })
      if (err instanceof PreconditionFailedError) throw err
      throw createError(FS_STORE, `put '${key}' failed`, { cause: err })
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const limit = options.limit ?? 1000
    if (!Number.isInteger(limit) || limit < 1) throw createError(FS_STORE, `limit must be a positive integer`)
    // Walk only the folder of the prefix's complete segments.
    const segments = prefix.split('/')
    segments.pop()
    const base = join(this.root, ...segments.map(encodeSegment))
    const keys: string[] = []
    const walk = async (dir: string, keyPrefix: string) => {
      let entries: import('node:fs').Dirent[]
      try {
        entries = await readdir(dir, { withFileTypes: true })
      } catch (err) {
        if (isMissing(err)) return
        throw err
      }
      for (const e of entries) {
        if (e.isDirectory()) {
          const next = `${keyPrefix}${decodeSegment(e.name)}/`
          if (next.startsWith(prefix) || prefix.startsWith(next)) await walk(join(dir, e.name), next)
        } else if (e.name.endsWith(OBJ)) {
          const key = keyPrefix + decodeSegment(e.name.slice(0, -OBJ.length))
          if (key.startsWith(prefix) && (options.cursor === undefined || key > options.cursor)) keys.push(key)
        }
      }
    }
    try {
      await walk(base, segments.length ? `${segments.join('/')}/` : '')
    } catch (cause) {
      throw createError(FS_STORE, `list '${prefix}' failed`, { cause })
    }
    // Code-unit order, as S3 lists in UTF-8 byte order for the keys this product uses.
    keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const page = keys.slice(0, limit)
    const objects: ObjectInfo[] = []
    for (const key of page) {
      const info = await this.head(key)
      if (info) objects.push(info) // deleted meanwhile: skip
    }
    return { objects, ...(keys.length > limit ? { cursor: page.at(-1) } : {}) }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key)
    try {
      await this.withLock(file, async () => {
        await unlink(file).catch((err) => {
          if (!isMissing(err)) throw err
        })
      })
    } catch (cause) {
      throw createError(FS_STORE, `delete '${key}' failed`, { cause })
    }
  }

  private async openObject(key: string): Promise<FileHandle | null> {
    const file = this.pathOf(key)
    try {
      return await open(file, 'r')
    } catch (err) {
      if (isMissing(err)) return null
      throw createError(FS_STORE, `cannot open '${key}'`, { cause: err })
    }
  }

  /** Runs `fn` holding the key's lock file; waits for another holder, takes over a stale lock. */
  private async withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
    const lock = file.slice(0, -OBJ.length) + LOCK
    await mkdir(dirname(lock), { recursive: true })
    for (let attempt = 0; ; attempt++) {
      try {
        const fh = await open(lock, 'wx')
        await fh.close()
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        const st = await stat(lock).catch(() => null)
        // A crashed writer's lock. (Two processes taking over the same stale lock at the
        // same instant could both proceed; that needs a crash and a race within one poll.)
        if (st && Date.now() - st.mtimeMs > this.staleLockMs) {
          await rm(lock, { force: true })
          continue
        }
        await sleep(Math.min(50, 2 + attempt))
      }
    }
    try {
      return await fn()
    } finally {
      await rm(lock, { force: true })
    }
  }
}
