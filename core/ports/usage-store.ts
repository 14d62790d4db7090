/**
 * UsageStore port: metered usage, one record per generation job (written by
 * its worker), cache hit (by the edge), batch line or fine-tuning job. Totals
 * are summed from records, never kept as counters, so they can be audited.
 */

export interface UsageRecord {
  /**
   * Idempotency key, for writers that may write the same record again (a
   * rerun generation job, batch line or fine-tuning job): a store counts one
   * record per id, the first written (a rerun may differ in time or tokens).
   * Left out by writers that write each record once (the edge, per cache
   * hit), which then costs the store no unique index entry.
   */
  id?: string
  tenant: string
  apiKeyId: string
  model: string
  /** 'completion' | 'chat.completion' | 'batch' | 'fine_tune' | ... */
  kind: string
  promptTokens: number
  completionTokens: number
  trainedTokens: number
  requestId?: string
  cached: boolean
  /** Epoch ms. */
  at: number
}

export interface UsageQuery {
  /** Omit for all tenants (admin). */
  tenant?: string
  from: number
  to: number
  bucketSeconds: number
  groupBy?: 'api_key' | 'model'
}

export interface UsageBucket {
  start: number
  end: number
  group?: string
  requests: number
  promptTokens: number
  completionTokens: number
  trainedTokens: number
}

export interface UsageStore {
  readonly name: string
  record(rec: UsageRecord): Promise<void>
  query(q: UsageQuery): Promise<UsageBucket[]>
  close?(): Promise<void>
}
