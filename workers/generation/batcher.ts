/**
 * Continuous batching for one model (the scheme of Orca / vLLM, without
 * paging): a single loop owns the session. Each iteration it
 *   1. admits waiting requests: prefills their prompts (several in one
 *      left-padded run, see `prefillInput`) and turns each prompt's last
 *      logits into its choices' first tokens;
 *   2. merges the new rows into the running batch, LEFT-padding KV caches to
 *      the longest row (see decoder.ts: masked keys get a 0 softmax weight and
 *      position_ids count real tokens, so a row computes what it would alone);
 *   3. runs ONE decode step for every row together;
 *   4. lets each row pick its next token; finished, cancelled or failed rows
 *      leave, and padding that every remaining row has is trimmed away.
 * So sequences join after their prefill and leave between steps. Limits:
 * `maxBatchSize` rows decode together (a request's n choices count as n
 * rows); an idle loop waits up to `maxWaitMs` for company before it starts;
 * a prefill run covers at most `prefillTokenBudget` padded prompt tokens
 * (one request always fits), so a burst of prompts does not stall decoding.
 *
 * On a LoRA-slot graph each request names its adapter slot (`adapterIndex`,
 * 0: the base): fine-tunes of one base share its batcher, and every run
 * feeds each row's slot (decoder.ts `ForwardInput.adapterIndex`).
 */
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { Decoder, ForwardInput, KvCache, KvRowSource } from './decoder.js'
import { generationCancelled } from './errors.js'

/** One sequence (one choice) as the batcher sees it. */
export interface BatchSequence {
  /**
   * Picks the next token from this row's logits (a private copy, free to
   * modify). `done`: the token ends the sequence and is not fed back.
   */
  step(logits: Float32Array): { token: number; done: boolean }
}

export interface BatcherOptions {
  model: string
  maxBatchSize?: number
  maxWaitMs?: number
  prefillTokenBudget?: number
  /** Prefill several waiting prompts in one left-padded run; default true. */
  batchPrefill?: boolean
  logger?: Logger
  metrics?: Metrics
}

/** Per request: which adapter slot its rows use, and the model its tokens are counted under. */
export interface SubmitOptions {
  /** LoRA slot of the decoder (0: the base model); default 0. */
  adapterIndex?: number
  /** Label of its token metrics; default the batcher's model. */
  model?: string
}

interface Request {
  promptIds: number[]
  sequences: BatchSequence[]
  adapterIndex: number
  model: string
  signal?: AbortSignal
  remaining: number
  failed: boolean
  enqueuedAt: number
  resolve(): void
  reject(err: unknown): void
}

interface Row {
  request: Request
  seq: BatchSequence
  /** Tokens in the KV cache for this row (real ones, no padding). */
  len: number
  /** Sampled, not yet fed. */
  pending: number
}

export class Batcher {
  private readonly waiting: Request[] = []
  private rows: Row[] = []
  private kv: KvCache | null = null
  private running = false
  private closed = false
  private maxSeen = 0
  /** Tokens sampled since the metric was last updated, by model. */
  private sampled = new Map<string, number>()
  readonly maxBatchSize: number
  readonly maxWaitMs: number
  readonly prefillTokenBudget: number
  readonly batchPrefill: boolean

  constructor(
    private readonly decoder: Decoder,
    private readonly o: BatcherOptions,
  ) {
    this.maxBatchSize = o.maxBatchSize ?? 32
    this.maxWaitMs = o.maxWaitMs ?? 2
    this.prefillTokenBudget = o.prefillTokenBudget ?? 4096
    this.batchPrefill = o.batchPrefill ?? true
    if (!(Number.isInteger(this.maxBatchSize) && this.maxBatchSize >= 1))
      throw new Error('Batcher: maxBatchSize must be an integer >= 1')
    if (!(this.maxWaitMs >= 0)) throw new Error('Batcher: maxWaitMs must be >= 0')
    if (!(this.prefillTokenBudget >= 1)) throw new Error('Batcher: prefillTokenBudget must be >= 1')
  }

  /** Rows decoding now. */
  get batchSize(): number {
    return this.rows.length
  }

  /** Largest batch seen since start. */
  get maxBatchSeen(): number {
    return this.maxSeen
  }

  /** Runs `sequences` (sharing the prompt) to completion; resolves when all are done. */
  submit(
    promptIds: number[],
    sequences: BatchSequence[],
    signal?: AbortSignal,
    options: SubmitOptions = {},
  ): Promise<void> {
    if (this.closed) return Promise.reject(new Error('Batcher: closed'))
    if (!promptIds.length) return Promise.reject(new Error('Batcher: empty prompt'))
    if (sequences.length > this.maxBatchSize)
      return Promise.reject(
        new Error(`Batcher: ${sequences.length} sequences exceed maxBatchSize ${this.maxBatchSize}`),
      )
    if (!sequences.length) return Promise.resolve()
    if (signal?.aborted) return Promise.reject(generationCancelled())
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        // Still waiting: leave the queue now. Running rows leave at the next step.
        const i = this.waiting.indexOf(request)
        if (i >= 0) {
          this.waiting.splice(i, 1)
          this.fail(request, generationCancelled())
        }
      }
      const request: Request = {
        promptIds,
        sequences,
        adapterIndex: options.adapterIndex ?? 0,
        model: options.model ?? this.o.model,
        signal,
        remaining: sequences.length,
        failed: false,
        enqueuedAt: performance.now(),
        resolve: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort)
          reject(err)
        },
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(request)
      this.kick()
    })
  }

  /** Fails what is waiting or running; the loop ends. */
  close(): void {
    this.closed = true
    const err = new Error('Batcher: closed')
    for (const r of this.waiting.splice(0)) r.reject(err)
    for (const row of this.rows) this.fail(row.request, err)
    this.rows = []
    this.kv = null
    this.kick()
  }

  private kick(): void {
    if (!this.running && !this.closed) {
      this.running = true
      void this.loop().finally(() => {
        this.running = false
        if (!this.closed && (this.waiting.length || this.rows.length)) this.kick()
      })
    }
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (!this.rows.length && !this.waiting.length) return
      if (!this.rows.length && this.maxWaitMs > 0) {
        // Idle: give concurrent arrivals a moment to join the first step.
        const waited = performance.now() - this.waiting[0].enqueuedAt
        if (waited < this.maxWaitMs) await sleep(this.maxWaitMs - waited)
      }
      await this.admit()
      this.dropCancelled()
      if (!this.rows.length) continue
      await this.decodeStep()
    }
  }

  /** Prefills waiting requests that fit, and merges their rows into the batch. */
  private async admit(): Promise<void> {
    const group: Request[] = []
    let rows = this.rows.length
    let maxLen = 0
    const V = this.decoder.info.vocabSize
    while (this.waiting.length) {
      const next = this.waiting[0]
      if (next.signal?.aborted) {
        this.waiting.shift()
        next.reject(generationCancelled())
        continue
      }
      if (rows + next.sequences.length > this.maxBatchSize) break
      if (group.length) {
        if (!this.batchPrefill) break
        // Padded size of the group's prefill, and the logits it materialises, stay bounded.
        const len = Math.max(maxLen, next.promptIds.length)
        if ((group.length + 1) * len > this.prefillTokenBudget) break
        if ((group.length + 1) * len * V * 4 > MAX_PREFILL_LOGITS_BYTES) break
      }
      this.waiting.shift()
      group.push(next)
      rows += next.sequences.length
      maxLen = Math.max(maxLen, next.promptIds.length)
    }
    if (!group.length) return
    let prefill: { logits: Float32Array; present: KvCache }
    try {
      prefill = await this.decoder.forward({
        ...prefillInput(group.map((r) => r.promptIds)),
        past: this.decoder.emptyCache(group.length),
        ...adapterIndexOf(group),
      })
    } catch (err) {
      for (const r of group) this.fail(r, err)
      return
    }
    if (this.closed) {
      for (const r of group) this.fail(r, new Error('Batcher: closed'))
      return
    }
    const joined: Array<{ row: Row; source: KvRowSource }> = []
    group.forEach((request, g) => {
      this.o.metrics?.promptTokens.inc({ model: request.model }, request.promptIds.length)
      for (const seq of request.sequences) {
        const row: Row = { request, seq, len: request.promptIds.length, pending: 0 }
        if (this.advance(row, prefill.logits.slice(g * V, (g + 1) * V))) continue
        joined.push({ row, source: { src: prefill.present, row: g, len: row.len } })
      }
    })
    this.countTokens()
    if (!joined.length) return
    const sources: KvRowSource[] = this.rows.map((row, i) => ({ src: this.kv!, row: i, len: row.len }))
    sources.push(...joined.map((j) => j.source))
    this.rows.push(...joined.map((j) => j.row))
    this.kv = this.decoder.rebuild(sources, Math.max(...this.rows.map((r) => r.len)))
  }

  /** One forward step for all rows, then each row picks its next token. */
  private async decodeStep(): Promise<void> {
    const rows = this.rows
    const kv = this.kv!
    const B = rows.length
    const S = kv.length
    const V = this.decoder.info.vocabSize
    this.maxSeen = Math.max(this.maxSeen, B)
    this.o.metrics?.batchSize.set({ model: this.o.model }, B)
    this.o.metrics?.batchSizeMax.set({ model: this.o.model }, this.maxSeen)
    const inputIds = new BigInt64Array(B)
    const positionIds = new BigInt64Array(B)
    const attentionMask = new BigInt64Array(B * (S + 1))
    rows.forEach((row, b) => {
      inputIds[b] = BigInt(row.pending)
      positionIds[b] = BigInt(row.len)
      // real tokens are the last `len` of S, then the new one
      attentionMask.fill(1n, b * (S + 1) + (S - row.len), (b + 1) * (S + 1))
    })
    let out: { logits: Float32Array; present: KvCache }
    try {
      out = await this.decoder.forward({
        batch: B,
        seq: 1,
        inputIds,
        attentionMask,
        positionIds,
        past: kv,
        ...adapterIndexOf(rows.map((row) => row.request)),
      })
    } catch (err) {
      for (const row of rows) this.fail(row.request, err)
      this.rows = []
      this.kv = null
      return
    }
    // Rows may have been failed or closed while the step ran.
    if (this.rows !== rows) return
    this.kv = out.present
    const keep: Row[] = []
    rows.forEach((row, b) => {
      row.len++
      if (row.request.failed) return
      // forward() returns fresh logits: each row may own (and modify) its slice in place.
      if (!this.advance(row, out.logits.subarray(b * V, (b + 1) * V))) keep.push(row)
    })
    this.countTokens()
    if (this.closed) return
    if (keep.length !== rows.length) this.compact(keep)
  }

  /** Feeds logits to a row; true when the row is finished (done, failed or cancelled). */
  private advance(row: Row, logits: Float32Array): boolean {
    const r = row.request
    if (r.failed) return true
    if (r.signal?.aborted) {
      this.fail(r, generationCancelled())
      return true
    }
    let result: { token: number; done: boolean }
    try {
      result = row.seq.step(logits)
    } catch (err) {
      this.fail(r, err)
      return true
    }
    row.pending = result.token
    this.sampled.set(r.model, (this.sampled.get(r.model) ?? 0) + 1)
    if (result.done) {
      r.remaining--
      if (r.remaining === 0) r.resolve()
      return true
    }
    return false
  }

  private countTokens(): void {
    for (const [model, n] of this.sampled) this.o.metrics?.generationTokens.inc({ model }, n)
    this.sampled.clear()
  }

  private dropCancelled(): void {
    const keep = this.rows.filter((row) => {
      if (row.request.failed) return false
      if (row.request.signal?.aborted) {
        this.fail(row.request, generationCancelled())
        return false
      }
      return true
    })
    if (keep.length !== this.rows.length) this.compact(keep)
  }

  /** Keeps `keep` (in order) and trims the padding they all share. */
  private compact(keep: Row[]): void {
    const index = new Map(this.rows.map((row, i) => [row, i]))
    const kv = this.kv!
    this.rows = keep
    if (!keep.length) {
      this.kv = null
      this.o.metrics?.batchSize.set({ model: this.o.model }, 0)
      return
    }
    const length = Math.max(...keep.map((r) => r.len))
    this.kv = this.decoder.rebuild(
      keep.map((row) => ({ src: kv, row: index.get(row)!, len: row.len })),
      length,
    )
  }

  private fail(r: Request, err: unknown): void {
    if (r.failed) return
    r.failed = true
    r.reject(err)
  }
}

/** Each row's adapter slot, only when some row is not on the base (slot 0). */
function adapterIndexOf(requests: readonly Request[]): Pick<ForwardInput, 'adapterIndex'> {
  if (requests.every((r) => r.adapterIndex === 0)) return {}
  return { adapterIndex: BigInt64Array.from(requests, (r) => BigInt(r.adapterIndex)) }
}

/** Prefill logits are [B, T, V] float32 unless the graph keeps only the last position. */
const MAX_PREFILL_LOGITS_BYTES = 256 * 1024 * 1024

/**
 * One prefill for several prompts: LEFT-padded to the longest, attention_mask
 * 0 on the padding, position_ids counting each row's real tokens from 0. The
 * last position of every row is a real token, so its logits are the row's.
 * Padding positions compute throw-away keys/values that later rebuilds drop.
 */
export function prefillInput(prompts: number[][]): Omit<ForwardInput, 'past'> {
  const B = prompts.length
  const T = Math.max(...prompts.map((p) => p.length))
  const inputIds = new BigInt64Array(B * T)
  const attentionMask = new BigInt64Array(B * T)
  const positionIds = new BigInt64Array(B * T)
  prompts.forEach((ids, b) => {
    const pad = T - ids.length
    for (let t = 0; t < T; t++) {
      const real = t >= pad
      inputIds[b * T + t] = BigInt(real ? ids[t - pad] : ids[0])
      attentionMask[b * T + t] = real ? 1n : 0n
      positionIds[b * T + t] = real ? BigInt(t - pad) : 0n
    }
  })
  return { batch: B, seq: T, inputIds, attentionMask, positionIds }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
