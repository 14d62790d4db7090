/**
 * In-memory ResponseCache: an LRU bounded by a byte budget (body + headers,
 * UTF-16 length × 2 as an estimate), with a TTL per entry. The local profile's
 * default; Workers use edge/adapters/workers-cache.ts.
 */
import type { CachedResponse, ResponseCache } from '../ports/response-cache.js'

export const MEMORY_RESPONSE_CACHE = 'memory'

export interface MemoryResponseCacheOptions {
  /** Budget in bytes for all entries together. Default 64 MiB. */
  maxBytes?: number
  /** Clock in epoch ms. Default Date.now. */
  now?: () => number
}

interface Entry {
  value: CachedResponse
  expiresAt: number
  bytes: number
}

const sizeOf = (v: CachedResponse, key: string) =>
  2 *
    (key.length +
      v.body.length +
      Object.entries(v.headers).reduce((n, [k, x]) => n + k.length + x.length, 0)) +
  64

export class MemoryResponseCache implements ResponseCache {
  readonly name = MEMORY_RESPONSE_CACHE
  /** Map order is recency order: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>()
  private readonly maxBytes: number
  private readonly now: () => number
  private used = 0

  constructor(options: MemoryResponseCacheOptions = {}) {
    this.maxBytes = options.maxBytes ?? 64 * 1024 * 1024
    this.now = options.now ?? Date.now
    if (this.maxBytes < 1) throw new Error('MemoryResponseCache: maxBytes must be >= 1')
  }

  /** Bytes held now (estimate). */
  get bytes(): number {
    return this.used
  }

  get size(): number {
    return this.entries.size
  }

  async get(key: string): Promise<CachedResponse | null> {
    const e = this.entries.get(key)
    if (!e) return null
    if (e.expiresAt <= this.now()) {
      this.remove(key)
      return null
    }
    this.entries.delete(key)
    this.entries.set(key, e)
    return structuredClone(e.value)
  }

  async put(key: string, value: CachedResponse, ttlSeconds: number): Promise<void> {
    this.remove(key)
    const bytes = sizeOf(value, key)
    if (ttlSeconds <= 0 || bytes > this.maxBytes) return
    while (this.used + bytes > this.maxBytes) {
      const oldest = this.entries.keys().next().value
      if (oldest === undefined) break
      this.remove(oldest)
    }
    this.entries.set(key, { value: structuredClone(value), expiresAt: this.now() + ttlSeconds * 1000, bytes })
    this.used += bytes
  }

  async delete(key: string): Promise<void> {
    this.remove(key)
  }

  private remove(key: string): void {
    const e = this.entries.get(key)
    if (!e) return
    this.entries.delete(key)
    this.used -= e.bytes
  }
}
