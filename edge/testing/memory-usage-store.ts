/** In-memory UsageStore for tests and the Workers profile without a database. */
import type { UsageBucket, UsageQuery, UsageRecord, UsageStore } from '../../core/ports/usage-store.js'

export class MemoryUsageStore implements UsageStore {
  readonly name = 'memory'
  readonly records: UsageRecord[] = []

  async record(rec: UsageRecord): Promise<void> {
    this.records.push({ ...rec })
  }

  async query(q: UsageQuery): Promise<UsageBucket[]> {
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
