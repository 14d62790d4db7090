/**
 * An in-memory ObjectStore (core/ports/object-store.ts) with conditional
 * puts, paging and chunked streaming, and a counter of reads so tests can see
 * how often a key was fetched. For tests, benchmarks, and the Workers/Lambda
 * entries when no bucket is bound (one isolate's memory: nothing survives it).
 */
import {
  type Body,
  type ListOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  PreconditionFailedError,
  type PutOptions,
} from '../ports/object-store.js'

interface Item {
  bytes: Uint8Array
  info: ObjectInfo
}

export class MemoryObjectStore implements ObjectStore {
  readonly name = 'memory'
  readonly supportsConditionalPut = true
  private readonly items = new Map<string, Item>()
  private version = 0
  /** Reads (get or getStream) per key. */
  readonly reads = new Map<string, number>()

  async get(key: string): Promise<Uint8Array | null> {
    this.reads.set(key, (this.reads.get(key) ?? 0) + 1)
    const item = this.items.get(key)
    return item ? item.bytes.slice() : null
  }

  async getStream(key: string): Promise<ReadableStream<Uint8Array> | null> {
    this.reads.set(key, (this.reads.get(key) ?? 0) + 1)
    const item = this.items.get(key)
    if (!item) return null
    const bytes = item.bytes
    const chunk = 64 * 1024
    let offset = 0
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= bytes.length) return controller.close()
        controller.enqueue(bytes.slice(offset, offset + chunk))
        offset += chunk
      },
    })
  }

  async head(key: string): Promise<ObjectInfo | null> {
    return this.items.get(key)?.info ?? null
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<{ etag: string }> {
    // Read the body first: the check and the write below must not be split by an await,
    // or racing conditional puts would all pass the check.
    const bytes = await toBytes(body)
    const current = this.items.get(key)
    if (options.ifNoneMatch === '*' && current) throw new PreconditionFailedError(key)
    if (options.ifMatch !== undefined && current?.info.etag !== options.ifMatch)
      throw new PreconditionFailedError(key)
    const etag = `"${++this.version}"`
    this.items.set(key, {
      bytes,
      info: {
        key,
        size: bytes.byteLength,
        etag,
        lastModified: new Date(),
        contentType: options.contentType,
        metadata: options.metadata,
      },
    })
    return { etag }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const keys = [...this.items.keys()].filter((k) => k.startsWith(prefix)).sort()
    const start = options.cursor ? keys.findIndex((k) => k > options.cursor!) : 0
    const limit = options.limit ?? 1000
    const page = start < 0 ? [] : keys.slice(start, start + limit)
    const more = start >= 0 && start + limit < keys.length
    return { objects: page.map((k) => this.items.get(k)!.info), ...(more ? { cursor: page.at(-1) } : {}) }
  }

  async delete(key: string): Promise<void> {
    this.items.delete(key)
  }
}

async function toBytes(body: Body): Promise<Uint8Array> {
  if (typeof body === 'string') return new TextEncoder().encode(body)
  if (body instanceof Uint8Array) return body.slice()
  const chunks: Uint8Array[] = []
  const reader = body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    chunks.push(value)
  }
  return new Uint8Array(Buffer.concat(chunks))
}
