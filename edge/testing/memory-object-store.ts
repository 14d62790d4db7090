/**
 * In-memory ObjectStore, a test double until the fs adapter lands
 * (core/adapters/fs-store.ts). Conditional puts are enforced.
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

interface Stored {
  bytes: Uint8Array
  info: ObjectInfo
}

async function toBytes(body: Body): Promise<Uint8Array> {
  if (typeof body === 'string') return new TextEncoder().encode(body)
  if (body instanceof Uint8Array) return body.slice()
  return new Uint8Array(await new Response(body).arrayBuffer())
}

export class MemoryObjectStore implements ObjectStore {
  readonly name = 'memory'
  readonly supportsConditionalPut = true
  private readonly objects = new Map<string, Stored>()
  private version = 0

  async get(key: string): Promise<Uint8Array | null> {
    return this.objects.get(key)?.bytes.slice() ?? null
  }

  async getStream(key: string): Promise<ReadableStream<Uint8Array> | null> {
    const bytes = await this.get(key)
    return bytes ? new Response(bytes as Uint8Array<ArrayBuffer>).body : null
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const o = this.objects.get(key)
    return o ? { ...o.info } : null
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<{ etag: string }> {
    const existing = this.objects.get(key)
    if (options.ifNoneMatch === '*' && existing) throw new PreconditionFailedError(key)
    if (options.ifMatch !== undefined && existing?.info.etag !== options.ifMatch)
      throw new PreconditionFailedError(key)
    const bytes = await toBytes(body)
    const etag = `"v${++this.version}"`
    this.objects.set(key, {
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
    const limit = options.limit ?? 1000
    const keys = [...this.objects.keys()]
      .filter((k) => k.startsWith(prefix) && (!options.cursor || k > options.cursor))
      .sort()
    const page = keys.slice(0, limit)
    return {
      objects: page.map((k) => ({ ...this.objects.get(k)!.info })),
      cursor: keys.length > limit ? page.at(-1) : undefined,
    }
  }

  async delete(key: string): Promise<void> {
    this.objects.delete(key)
  }
}
