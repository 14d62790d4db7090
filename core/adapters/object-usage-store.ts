/**
 * UsageStore over the ObjectStore port (core/ports/usage-store.ts): usage
 * records as append-only objects, partitioned by time, on S3, R2, MinIO or a
 * folder. Works on any backend (conditional puts are used when offered, not
 * needed): a record is never rewritten, and a query dedupes by record id.
 *
 * Layout, under `prefix` (default `usage/`), one object per record:
 *
 *   <partition>/<tenant>/<apiKeyId>/<model>/<kind>/<at>~<id>~<prompt>~<completion>~<trained>~<cached>
 *
 * `<partition>` is the UTC start of the record's partition
 * (`partitionSeconds`, default 3600: `20260101T0000Z`). Every field a query
 * sums or groups by is in the key, so a query only lists: the partitions
 * overlapping [from, to) (the tenant's folder in each, when a tenant is
 * given), never reading an object. The body is the full record (with
 * requestId), for audits. A record id written twice with the same content is
 * one key (written once); the query counts each id once in any case.
 *
 * Semantics as the SQLite adapter: `from <= at < to`; buckets aligned to
 * `from`, `bucketSeconds` long; only buckets (and groups) with records,
 * ordered by start then group.
 */
import { newId } from '../ids.js'
import type { ObjectStore } from '../ports/object-store.js'
import type { UsageBucket, UsageQuery, UsageRecord, UsageStore } from '../ports/usage-store.js'
import { createError } from './adapter-error.js'
import {
  decodeSegment,
  encodeSegment,
  listAll,
  mapLimit,
  normalisePrefix,
  padTime,
  putIfAbsent,
  toJson,
} from './object-records.js'

export const OBJECT_USAGE_STORE = 'object-usage-store'

export interface ObjectUsageStoreOptions {
  store: ObjectStore
  /** Key prefix of the records. Default `usage/`. */
  prefix?: string
  /** Length of a time partition, seconds; a query lists one prefix per partition. Default 3600. */
  partitionSeconds?: number
  /** Partitions listed at once by a query. Default 8. */
  listConcurrency?: number
}

/** A query may span at most this many partitions (a year of hours). */
const MAX_PARTITIONS = 24 * 366

interface Parsed {
  id: string
  tenant: string
  apiKeyId: string
  model: string
  at: number
  prompt: number
  completion: number
  trained: number
}

export class ObjectUsageStore implements UsageStore {
  readonly name = OBJECT_USAGE_STORE
  private readonly store: ObjectStore
  private readonly prefix: string
  private readonly partitionMs: number
  private readonly concurrency: number

  constructor(options: ObjectUsageStoreOptions) {
    if (!options?.store) throw createError(OBJECT_USAGE_STORE, 'store is required')
    const seconds = options.partitionSeconds ?? 3600
    if (!Number.isInteger(seconds) || seconds < 60)
      throw createError(OBJECT_USAGE_STORE, 'partitionSeconds must be an integer >= 60')
    this.store = options.store
    this.prefix = normalisePrefix(options.prefix, 'usage/')
    this.partitionMs = seconds * 1000
    this.concurrency = options.listConcurrency ?? 8
  }

  private partition(ms: number): string {
    const start = Math.floor(ms / this.partitionMs) * this.partitionMs
    // 2026-01-01T00:00:00.000Z → 20260101T0000Z (partitions are >= 60 s apart, so names differ).
    const iso = new Date(start).toISOString()
    return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}Z`
  }

  async record(rec: UsageRecord): Promise<void> {
    if (!rec.tenant || rec.id === '')
      throw createError(OBJECT_USAGE_STORE, 'tenant is required, and an id when given is not empty')
    // A record written once still needs a key of its own (a put costs far more than the id).
    const id = rec.id ?? newId('usage')
    for (const n of [rec.promptTokens, rec.completionTokens, rec.trainedTokens, rec.at])
      if (!Number.isInteger(n) || n < 0)
        throw createError(OBJECT_USAGE_STORE, 'token counts and at must be integers >= 0')
    const key =
      `${this.prefix}${this.partition(rec.at)}/${encodeSegment(rec.tenant)}/${encodeSegment(rec.apiKeyId ?? '')}/` +
      `${encodeSegment(rec.model ?? '')}/${encodeSegment(rec.kind ?? '')}/` +
      [
        padTime(rec.at),
        encodeSegment(id),
        rec.promptTokens,
        rec.completionTokens,
        rec.trainedTokens,
        rec.cached ? 1 : 0,
      ].join('~')
    const body = toJson({ ...rec, id })
    if (this.store.supportsConditionalPut) await putIfAbsent(this.store, key, body)
    else await this.store.put(key, body, { contentType: 'application/json' })
  }

  private parse(key: string): Parsed | null {
    const parts = key.slice(this.prefix.length).split('/')
    if (parts.length !== 6) return null
    const [, tenant, apiKeyId, model, , last] = parts
    const [at, id, prompt, completion, trained] = last.split('~')
    if (trained === undefined) return null
    return {
      id: decodeSegment(id),
      tenant: decodeSegment(tenant),
      apiKeyId: decodeSegment(apiKeyId),
      model: decodeSegment(model),
      at: Number(at),
      prompt: Number(prompt),
      completion: Number(completion),
      trained: Number(trained),
    }
  }

  async query(q: UsageQuery): Promise<UsageBucket[]> {
    if (!Number.isInteger(q.bucketSeconds) || q.bucketSeconds < 1)
      throw createError(OBJECT_USAGE_STORE, 'bucketSeconds must be an integer >= 1')
    if (!Number.isInteger(q.from) || !Number.isInteger(q.to) || q.to <= q.from)
      throw createError(OBJECT_USAGE_STORE, 'from and to must be epoch ms with to after from')
    if (q.groupBy !== undefined && q.groupBy !== 'api_key' && q.groupBy !== 'model')
      throw createError(OBJECT_USAGE_STORE, `groupBy must be api_key or model, got '${q.groupBy}'`)
    const first = Math.floor(q.from / this.partitionMs)
    const last = Math.floor((q.to - 1) / this.partitionMs)
    if (last - first + 1 > MAX_PARTITIONS)
      throw createError(OBJECT_USAGE_STORE, `a query may span at most ${MAX_PARTITIONS} partitions`)
    const prefixes: string[] = []
    for (let p = first; p <= last; p++) {
      const base = `${this.prefix}${this.partition(p * this.partitionMs)}/`
      prefixes.push(q.tenant === undefined ? base : `${base}${encodeSegment(q.tenant)}/`)
    }
    const lists = await mapLimit(prefixes, this.concurrency, async (prefix) => {
      const keys: string[] = []
      for await (const key of listAll(this.store, prefix)) keys.push(key)
      return keys
    })

    const size = q.bucketSeconds * 1000
    const seen = new Set<string>()
    const buckets = new Map<string, UsageBucket & { b: number }>()
    for (const keys of lists)
      for (const key of keys) {
        const r = this.parse(key)
        if (!r || r.at < q.from || r.at >= q.to || seen.has(r.id)) continue
        if (q.tenant !== undefined && r.tenant !== q.tenant) continue
        seen.add(r.id)
        const b = Math.floor((r.at - q.from) / size)
        const group = q.groupBy === 'api_key' ? r.apiKeyId : q.groupBy === 'model' ? r.model : undefined
        const id = `${b}\u0000${group ?? ''}`
        let bucket = buckets.get(id)
        if (!bucket) {
          bucket = {
            b,
            start: q.from + b * size,
            end: q.from + (b + 1) * size,
            ...(q.groupBy ? { group } : {}),
            requests: 0,
            promptTokens: 0,
            completionTokens: 0,
            trainedTokens: 0,
          }
          buckets.set(id, bucket)
        }
        bucket.requests++
        bucket.promptTokens += r.prompt
        bucket.completionTokens += r.completion
        bucket.trainedTokens += r.trained
      }
    return [...buckets.values()]
      .sort(
        (x, y) =>
          x.b - y.b || ((x.group ?? '') < (y.group ?? '') ? -1 : (x.group ?? '') > (y.group ?? '') ? 1 : 0),
      )
      .map(({ b: _b, ...bucket }) => bucket)
  }
}
