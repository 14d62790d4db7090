/**
 * Shared pieces of the record adapters over the ObjectStore port
 * (object-job-store.ts, object-key-store.ts, object-usage-store.ts): key
 * segment encoding, fixed-width numbers that sort as strings, JSON objects,
 * and the compare-and-swap loop (head → get → check → put with If-Match).
 *
 * Why head before get: `get` returns no etag. Reading the etag first and the
 * bytes second is safe: if a writer slips in between, the bytes are newer
 * than the etag, the If-Match put fails, and the loop reads again. (The other
 * order would write a change computed from stale bytes under a fresh etag.)
 */
import { type ObjectStore, PreconditionFailedError } from '../ports/object-store.js'
import { createError } from './adapter-error.js'

/**
 * One key segment: percent-encoded (so `/` cannot split it), `~` escaped too
 * (our field separator), and the empty string as `~`.
 */
export function encodeSegment(s: string): string {
  if (s === '') return '~'
  return encodeURIComponent(s).replace(/[~!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

export function decodeSegment(s: string): string {
  return s === '~' ? '' : decodeURIComponent(s)
}

/** Epoch ms as 15 digits, so keys sort by time (good until the year 33658). */
export const padTime = (ms: number) => String(ms).padStart(15, '0')
/** 10^15 − ms as 15 digits: keys sort newest first. */
export const invertTime = (ms: number) => String(1e15 - ms).padStart(15, '0')

/** Throws at construction when the backend cannot compare-and-swap. */
export function requireConditionalPut(adapter: string, store: ObjectStore): void {
  if (!store?.supportsConditionalPut)
    throw createError(
      adapter,
      `the object store '${store?.name}' does not enforce conditional puts (If-None-Match/If-Match); ` +
        'records need them for create-once and compare-and-swap transitions',
    )
}

/** Normalises a key prefix: '' or ending in '/'. */
export function normalisePrefix(prefix: string | undefined, fallback: string): string {
  const p = prefix ?? fallback
  return p === '' || p.endsWith('/') ? p : `${p}/`
}

export async function getJson<T>(store: ObjectStore, key: string): Promise<T | null> {
  const bytes = await store.get(key)
  return bytes ? (JSON.parse(Buffer.from(bytes).toString('utf8')) as T) : null
}

export const toJson = (v: unknown) => JSON.stringify(v)

/** Puts only if absent. Returns false when the key exists already. */
export async function putIfAbsent(store: ObjectStore, key: string, body: string): Promise<boolean> {
  try {
    await store.put(key, body, { ifNoneMatch: '*', contentType: 'application/json' })
    return true
  } catch (err) {
    if (err instanceof PreconditionFailedError) return false
    throw err
  }
}

export interface CasOptions {
  /** Attempts before giving up under contention. Default 50. */
  maxAttempts?: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Read-modify-write of one JSON object by compare-and-swap. `update` gets the
 * current value (null when missing) and returns the next value to write, or
 * `{ done: result }` to stop without writing. It may throw (e.g. an illegal
 * transition); it runs again on every retry, against the fresh value.
 */
export async function casUpdate<T, R>(
  adapter: string,
  store: ObjectStore,
  key: string,
  update: (current: T | null) => { write: T; result: R } | { done: R },
  options: CasOptions = {},
): Promise<R> {
  const max = options.maxAttempts ?? 50
  for (let attempt = 1; ; attempt++) {
    const info = await store.head(key)
    const current = info ? await getJson<T>(store, key) : null
    const step = update(current)
    if ('done' in step) return step.done
    try {
      await store.put(key, toJson(step.write), {
        contentType: 'application/json',
        ...(info ? { ifMatch: info.etag } : { ifNoneMatch: '*' }),
      })
      return step.result
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err
      if (attempt >= max)
        throw createError(adapter, `'${key}' changed under ${max} attempts in a row; giving up`, {
          cause: err,
        })
      // Jittered backoff, growing a little: racing writers spread out.
      await sleep(Math.random() * Math.min(50, 2 * attempt))
    }
  }
}

/** Every key under a prefix, page by page. */
export async function* listAll(store: ObjectStore, prefix: string): AsyncGenerator<string> {
  let cursor: string | undefined
  do {
    const page = await store.list(prefix, cursor === undefined ? {} : { cursor })
    for (const o of page.objects) yield o.key
    cursor = page.cursor
  } while (cursor !== undefined)
}

/** Runs fn over items with at most `n` at once, keeping the order of results. */
export async function mapLimit<T, R>(items: readonly T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const run = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run))
  return out
}
