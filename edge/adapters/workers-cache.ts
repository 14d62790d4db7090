/**
 * ResponseCache on the Workers Cache API (`caches.default` or a named cache).
 * Entries are stored as Responses under a synthetic URL per key, with
 * `cache-control: max-age=<ttl>` so the cache expires them; the original
 * status, headers and storedAt travel in the stored response. The Workers
 * cache is per data center, which suits a cache of repeatable requests.
 */
import type { CachedResponse, ResponseCache } from '../../core/ports/response-cache.js'

export const WORKERS_CACHE = 'workers-cache'

/** The slice of the Workers Cache interface used here. */
export interface CacheLike {
  match(request: Request | string): Promise<Response | undefined>
  put(request: Request | string, response: Response): Promise<void>
  delete(request: Request | string): Promise<boolean>
}

export interface WorkersCacheOptions {
  /** Host of the synthetic URLs (entries of different deployments stay apart). Default pgpt-cache.internal. */
  namespace?: string
  /** Response class to build entries with (tests pass Miniflare's). Default the global Response. */
  Response?: typeof Response
}

const META = 'x-pgpt-cache-meta'

export class WorkersCache implements ResponseCache {
  readonly name = WORKERS_CACHE
  private readonly base: string
  private readonly Res: typeof Response

  constructor(
    private readonly cache: CacheLike,
    o: WorkersCacheOptions = {},
  ) {
    this.base = `https://${o.namespace ?? 'pgpt-cache.internal'}/v1/`
    this.Res = o.Response ?? Response
  }

  private url(key: string): string {
    if (!/^[A-Za-z0-9_-]{1,256}$/.test(key)) throw new Error(`[${this.name}] key must be URL-safe: '${key}'`)
    return this.base + key
  }

  async get(key: string): Promise<CachedResponse | null> {
    const res = await this.cache.match(this.url(key))
    if (!res) return null
    const meta = JSON.parse(res.headers.get(META) ?? 'null') as {
      status: number
      headers: Record<string, string>
      storedAt: number
    } | null
    if (!meta) return null
    return { status: meta.status, headers: meta.headers, storedAt: meta.storedAt, body: await res.text() }
  }

  async put(key: string, value: CachedResponse, ttlSeconds: number): Promise<void> {
    if (ttlSeconds <= 0) return
    const meta = JSON.stringify({ status: value.status, headers: value.headers, storedAt: value.storedAt })
    // Stored as 200: the Cache API refuses some statuses; the real one is in the meta header.
    await this.cache.put(
      this.url(key),
      new this.Res(value.body, {
        status: 200,
        headers: {
          'content-type': 'application/octet-stream',
          'cache-control': `max-age=${Math.ceil(ttlSeconds)}`,
          [META]: meta,
        },
      }),
    )
  }

  async delete(key: string): Promise<void> {
    await this.cache.delete(this.url(key))
  }
}
