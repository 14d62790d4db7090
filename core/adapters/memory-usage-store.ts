/**
 * In-memory UsageStore for tests, and for the Workers/Lambda entries when no
 * durable records are configured (one isolate's memory: nothing survives it).
 */
import type { UsageBucket, UsageQuery, UsageRecord, UsageStore } from '../ports/usage-store.js'
import { createError } from './adapter-error.js'

const MEMORY_USAGE_STORE = 'memory-usage-store'

export class MemoryUsageStore implements UsageStore {
  readonly name = 'memory'
  readonly records: UsageRecord[] = []
  private readonly ids = new Set<string>()

  async record(rec: UsageRecord): Promise<void> {
    // A record id counts once, however often it is recorded (retries).
    if (rec.id !== undefined) {
      if (this.ids.has(rec.id)) return
      this.ids.add(rec.id)
    }
    this.records.push({ ...rec })
  }

  async query(q: UsageQuery): Promise<UsageBucket[]> {
    if (!Number.isInteger(q.bucketSeconds) || q.bucketSeconds < 1)
      throw createError(MEMORY_USAGE_STORE, 'bucketSeconds must be an integer >= 1')
    if (!Number.isInteger(q.from) || !Number.isInteger(q.to) || q.to <= q.from)
      throw createError(MEMORY_USAGE_STORE, 'from and to must be epoch ms with to after from')
    const buckets = new Map<string, UsageBucket>()
    const size = q.bucketSeconds * 1000
    for (const r of this.records) {
      if ((q.tenant && r.tenant !== q.tenant) || r.at < q.from || r.at >= q.to) continue
      const start = q.from + Math.floor((r.at - q.from) / size) * size
      const group = q.groupBy === 'api_key' ? r.apiKeyId : q.groupBy === 'model' ? r.model : undefined
      const k = `${start}|${group ?? ''}`
      let b = buckets.get(k)
      if (!b) {
        b = {
          start,
          end: start + size,
          group,
          requests: 0,
          promptTokens: 0,
          completionTokens: 0,
          trainedTokens: 0,
        }
        buckets.set(k, b)
      }
      b.requests++
      b.promptTokens += r.promptTokens
      b.completionTokens += r.completionTokens
      b.trainedTokens += r.trainedTokens
    }
    return [...buckets.values()].sort(
      (a, b) => a.start - b.start || String(a.group).localeCompare(String(b.group)),
    )
  }
}
