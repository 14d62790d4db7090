/**
 * LoRA adapters beside a base model (S-LoRA / Punica style): the base's graph
 * has stacked adapter inputs (models/llama/graph.ts `loraSlotLinear`), and each
 * row of a batch picks a slot with `adapter_index`. Slot 0 is all zeros: the
 * base itself.
 *
 * - `LoraSlots`: the stacked tensors of one decoder (`lora.<layer>.<module>.A`
 *   [slots, in, rank], `.B` [slots, rank, out], `lora_scale` [slots], and the
 *   trainable-token tables `lora.tokens.*` when the graph has them), kept
 *   as typed arrays and written in place when a slot is (re)loaded. The rank
 *   is the largest loaded adapter's; lower ranks are padded with zeros (the
 *   buffers are reallocated only when a larger rank arrives); token rows
 *   likewise grow to the largest adapter's count.
 * - `AdapterSlotPool`: which adapter sits in which slot; LRU over idle slots,
 *   a slot held by a running request is never replaced, and a request waits
 *   when every slot is held.
 * - `slotAdapterOf`: PEFT weights (`adapter_model.safetensors`) → per-site
 *   matrices.
 */
import * as ort from 'onnxruntime-node'
import type { Logger } from '../../core/logger.js'
import { headDim, type LlamaConfig } from '../../models/config.js'
import { toHalfBits } from '../../models/half.js'
import {
  LORA_SLOT_INPUTS,
  LORA_TOKEN_INPUTS,
  PROJECTIONS,
  type Projection,
} from '../../models/llama/graph.js'
import type { IoMetadata } from '../../models/model-info.js'
import type { Weights } from '../../models/safetensors.js'
import { TOKENS_DELTA } from '../../models/train/lora.js'
import { generationCancelled } from './errors.js'

/** Slots per base decoder (slot 0, the base, included). */
export const DEFAULT_LORA_SLOTS = 8
/** Largest adapter rank loaded into slots (fine-tuning allows up to 64). */
export const DEFAULT_LORA_MAX_RANK = 64

/** One adapted projection of the graph. */
export interface LoraSite {
  key: string
  inDim: number
  outDim: number
}

/** An adapter as slots take it: PEFT's matrices per site (`<layer>.<module>`). */
export interface SlotAdapter {
  rank: number
  /** alpha / rank */
  scale: number
  /** a: [rank, in] (lora_A), b: [out, rank] (lora_B), row-major. */
  sites: Map<string, { a: Float32Array; b: Float32Array }>
  /** Trainable tokens: their ids and embedding deltas [ids.length, hidden], row-major; null when none. */
  tokens: { ids: number[]; delta: Float32Array } | null
  bytes: number
}

/** The embedding a graph's trainable-token slots apply to. */
export interface TokenSlotShape {
  vocab: number
  hidden: number
}

const siteKey = (layer: number, module: string) => `${layer}.${module}`

/** The adapted projections of a Llama with slots on `modules`, as `LoraSlots.fromInputs` reads them from its graph. */
export function loraSites(c: LlamaConfig, modules: readonly Projection[]): Map<string, LoraSite> {
  const q = c.numHeads * headDim(c)
  const kv = c.numKvHeads * headDim(c)
  const dims: Record<Projection, [inDim: number, outDim: number]> = {
    q_proj: [c.hiddenSize, q],
    k_proj: [c.hiddenSize, kv],
    v_proj: [c.hiddenSize, kv],
    o_proj: [q, c.hiddenSize],
    gate_proj: [c.hiddenSize, c.intermediateSize],
    up_proj: [c.hiddenSize, c.intermediateSize],
    down_proj: [c.intermediateSize, c.hiddenSize],
  }
  const sites = new Map<string, LoraSite>()
  for (let layer = 0; layer < c.numLayers; layer++)
    for (const module of modules) {
      const [inDim, outDim] = dims[module]
      sites.set(siteKey(layer, module), { key: siteKey(layer, module), inDim, outDim })
    }
  return sites
}
type SlotArray = Float32Array | Uint16Array

/** The stacked adapter tensors a LoRA-slot graph is fed. */
export class LoraSlots {
  private rankNow = 1
  private a = new Map<string, SlotArray>()
  private b = new Map<string, SlotArray>()
  private readonly scale: SlotArray
  /** Token tables (when the graph has token slots): rows per slot, row 0 zeros. */
  private tokenRows = 1
  private tokenMap: BigInt64Array | null = null
  private tokenIds: BigInt64Array | null = null
  private tokenDelta: SlotArray | null = null
  /** What each slot holds, to rebuild on a rank change. */
  private readonly held: (SlotAdapter | null)[]
  private tensors: Record<string, ort.Tensor> | null = null

  constructor(
    readonly sites: ReadonlyMap<string, LoraSite>,
    readonly dtype: 'float32' | 'float16',
    readonly capacity: number,
    /** The graph's trainable-token slots, or null when it has none. */
    readonly tokens: TokenSlotShape | null = null,
  ) {
    if (!(Number.isInteger(capacity) && capacity >= 2)) throw new Error('LoraSlots: capacity must be >= 2')
    this.scale = this.alloc(capacity)
    this.held = Array.from({ length: capacity }, () => null)
    this.allocate(1)
    if (tokens) this.tokenMap = new BigInt64Array(capacity * tokens.vocab)
    this.allocateTokens(1)
  }

  /** The slots of a graph with `loraSlotLinear` inputs, or null for any other graph. */
  static fromInputs(inputs: readonly IoMetadata[], capacity: number): LoraSlots | null {
    const names = new Map(inputs.map((i) => [i.name, i]))
    const scale = names.get(LORA_SLOT_INPUTS.scale)
    if (!scale || !names.has(LORA_SLOT_INPUTS.index)) return null
    const dtype = scale.type === 'float16' ? 'float16' : 'float32'
    const sites = new Map<string, LoraSite>()
    for (const input of inputs) {
      const m = /^lora\.(\d+)\.([a-z_]+)\.A$/.exec(input.name)
      if (!m || !(PROJECTIONS as readonly string[]).includes(m[2])) continue
      const site = { layer: Number(m[1]), module: m[2] as Projection }
      const inDim = input.shape?.[1]
      const outDim = names.get(LORA_SLOT_INPUTS.b(site))?.shape?.[2]
      if (typeof inDim !== 'number' || typeof outDim !== 'number')
        throw new Error(`LoRA slots: '${input.name}' needs static in/out dimensions`)
      sites.set(siteKey(site.layer, site.module), { key: input.name.slice(5, -2), inDim, outDim })
    }
    if (!sites.size) return null
    const map = names.get(LORA_TOKEN_INPUTS.map)?.shape?.[1]
    const hidden = names.get(LORA_TOKEN_INPUTS.delta)?.shape?.[2]
    const tokens =
      typeof map === 'number' && typeof hidden === 'number' && names.has(LORA_TOKEN_INPUTS.ids)
        ? { vocab: map, hidden }
        : null
    return new LoraSlots(sites, dtype, capacity, tokens)
  }

  /** The padded rank fed now (the largest loaded adapter's, at least 1). */
  get rank(): number {
    return this.rankNow
  }

  /** Why `adapter` cannot go into these slots, or null when it can. */
  unfit(adapter: SlotAdapter, maxRank = DEFAULT_LORA_MAX_RANK): string | null {
    if (adapter.rank > maxRank) return `its rank ${adapter.rank} exceeds the slots' maximum ${maxRank}`
    for (const [key, m] of adapter.sites) {
      const site = this.sites.get(key)
      if (!site) return `the base graph has no adapter slot for '${key}'`
      if (m.a.length !== adapter.rank * site.inDim || m.b.length !== site.outDim * adapter.rank)
        return `its '${key}' matrices do not match the base's shapes`
    }
    const t = adapter.tokens
    if (t?.ids.length) {
      if (!this.tokens) return 'the base graph has no trainable-token slots'
      if (t.delta.length !== t.ids.length * this.tokens.hidden)
        return "its trainable-token deltas do not match the base's hidden size"
      if (t.ids.some((id) => !(Number.isInteger(id) && id >= 0 && id < this.tokens!.vocab)))
        return "its trainable tokens are outside the base's vocabulary"
    }
    return null
  }

  /** Writes `adapter` into `slot` (1 … capacity-1), or clears it with null. */
  load(slot: number, adapter: SlotAdapter | null): void {
    if (!(Number.isInteger(slot) && slot >= 1 && slot < this.capacity))
      throw new Error(`LoraSlots: slot ${slot} is out of range`)
    if (adapter) {
      const why = this.unfit(adapter, Number.POSITIVE_INFINITY)
      if (why) throw new Error(`LoraSlots: the adapter does not fit: ${why}`)
    }
    this.held[slot] = adapter
    const rows = 1 + (adapter?.tokens?.ids.length ?? 0)
    if (adapter && (adapter.rank > this.rankNow || (this.tokens && rows > this.tokenRows))) {
      if (adapter.rank > this.rankNow) this.allocate(adapter.rank)
      if (this.tokens && rows > this.tokenRows) this.allocateTokens(rows)
      this.held.forEach((held, s) => {
        if (held) this.write(s, held)
      })
      return
    }
    this.write(slot, adapter)
  }

  /** Feeds of one run: the stacked tensors and each row's slot (default 0, the base). */
  feeds(batch: number, adapterIndex?: BigInt64Array): Record<string, ort.Tensor> {
    if (adapterIndex && adapterIndex.length !== batch)
      throw new Error(`LoraSlots: ${adapterIndex.length} adapter indices for ${batch} rows`)
    for (const i of adapterIndex ?? [])
      if (i < 0n || i >= BigInt(this.capacity))
        throw new Error(`LoraSlots: adapter index ${i} is out of range`)
    this.tensors ??= this.makeTensors()
    return {
      ...this.tensors,
      [LORA_SLOT_INPUTS.index]: new ort.Tensor('int64', adapterIndex ?? new BigInt64Array(batch), [batch]),
    }
  }

  private makeTensors(): Record<string, ort.Tensor> {
    const R = this.rankNow
    const S = this.capacity
    const out: Record<string, ort.Tensor> = {
      [LORA_SLOT_INPUTS.scale]: new ort.Tensor(this.dtype, this.scale, [S]),
    }
    for (const site of this.sites.values()) {
      out[`lora.${site.key}.A`] = new ort.Tensor(this.dtype, this.a.get(site.key)!, [S, site.inDim, R])
      out[`lora.${site.key}.B`] = new ort.Tensor(this.dtype, this.b.get(site.key)!, [S, R, site.outDim])
    }
    if (this.tokens) {
      const K = this.tokenRows
      out[LORA_TOKEN_INPUTS.map] = new ort.Tensor('int64', this.tokenMap!, [S, this.tokens.vocab])
      out[LORA_TOKEN_INPUTS.delta] = new ort.Tensor(this.dtype, this.tokenDelta!, [S, K, this.tokens.hidden])
      out[LORA_TOKEN_INPUTS.ids] = new ort.Tensor('int64', this.tokenIds!, [S, K])
    }
    return out
  }

  /** Fresh zeroed token tables of `rows` rows per slot (the map is rewritten by `write`). */
  private allocateTokens(rows: number): void {
    if (!this.tokens) return
    this.tokenRows = rows
    this.tokenDelta = this.alloc(this.capacity * rows * this.tokens.hidden)
    this.tokenIds = new BigInt64Array(this.capacity * rows)
    this.tensors = null
  }

  /** Slot `s`'s token tables ← the adapter's trainable tokens (row k+1 for its k-th token), or none. */
  private writeTokens(s: number, adapter: SlotAdapter | null): void {
    if (!this.tokens) return
    const { vocab, hidden } = this.tokens
    const K = this.tokenRows
    const map = this.tokenMap!
    const delta = this.tokenDelta!
    const ids = this.tokenIds!
    map.fill(0n, s * vocab, (s + 1) * vocab)
    delta.fill(0, s * K * hidden, (s + 1) * K * hidden)
    ids.fill(0n, s * K, (s + 1) * K)
    const t = adapter?.tokens
    if (!t) return
    const half = this.dtype === 'float16'
    t.ids.forEach((id, k) => {
      map[s * vocab + id] = BigInt(k + 1)
      ids[s * K + k + 1] = BigInt(id)
      const at = (s * K + k + 1) * hidden
      for (let j = 0; j < hidden; j++) {
        const v = t.delta[k * hidden + j]
        delta[at + j] = half ? toHalfBits(v) : v
      }
    })
  }

  private alloc(n: number): SlotArray {
    return this.dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n)
  }

  /** Fresh zeroed buffers of rank R (a run in flight keeps the old ones). */
  private allocate(R: number): void {
    this.rankNow = R
    for (const site of this.sites.values()) {
      this.a.set(site.key, this.alloc(this.capacity * site.inDim * R))
      this.b.set(site.key, this.alloc(this.capacity * R * site.outDim))
    }
    this.tensors = null
  }

  /** Slot `s` ← adapter (transposed to [in, R] and [R, out], zero-padded), or zeros. */
  private write(s: number, adapter: SlotAdapter | null): void {
    const R = this.rankNow
    const half = this.dtype === 'float16'
    const put = (arr: SlotArray, i: number, v: number) => {
      arr[i] = half ? toHalfBits(v) : v
    }
    put(this.scale, s, adapter ? adapter.scale : 0)
    this.writeTokens(s, adapter)
    for (const [key, site] of this.sites) {
      const { inDim, outDim } = site
      const A = this.a.get(site.key)!
      const B = this.b.get(site.key)!
      const aOff = s * inDim * R
      const bOff = s * R * outDim
      A.fill(0, aOff, aOff + inDim * R)
      B.fill(0, bOff, bOff + R * outDim)
      const m = adapter?.sites.get(key)
      if (!m || !adapter) continue
      const r = adapter.rank
      for (let j = 0; j < r; j++) for (let i = 0; i < inDim; i++) put(A, aOff + i * R + j, m.a[j * inDim + i])
      for (let o = 0; o < outDim; o++)
        for (let j = 0; j < r; j++) put(B, bOff + j * outDim + o, m.b[o * r + j])
    }
  }
}

/** A slot held for a request; `release` once its rows are done. */
export interface SlotLease {
  readonly index: number
  release(): void
}

interface SlotState {
  key: string | null
  refs: number
  lastUsed: number
}

export interface AdapterSlotPoolOptions {
  /** Largest rank accepted; default DEFAULT_LORA_MAX_RANK. */
  maxRank?: number
  /** The base's id, for logs. */
  base?: string
  logger?: Logger
}

/**
 * Assigns adapters to the slots of one decoder. An adapter already in a slot
 * is reused; otherwise it takes a free slot, or the least recently used slot
 * that no request holds. When every slot is held, `acquire` waits.
 */
export class AdapterSlotPool {
  private readonly state: SlotState[]
  private clock = 0
  private waiters: Array<() => void> = []

  constructor(
    readonly slots: LoraSlots,
    private readonly o: AdapterSlotPoolOptions = {},
  ) {
    this.state = Array.from({ length: slots.capacity }, () => ({ key: null, refs: 0, lastUsed: 0 }))
  }

  get maxRank(): number {
    return this.o.maxRank ?? DEFAULT_LORA_MAX_RANK
  }

  /** Why `adapter` cannot be served from these slots, or null. */
  unfit(adapter: SlotAdapter): string | null {
    return this.slots.unfit(adapter, this.maxRank)
  }

  /** The slot of adapter `key` (a model id and version), loading it when absent. */
  async acquire(key: string, adapter: SlotAdapter, signal?: AbortSignal): Promise<SlotLease> {
    const why = this.unfit(adapter)
    if (why) throw new Error(`AdapterSlotPool: ${why}`)
    for (;;) {
      if (signal?.aborted) throw generationCancelled()
      let index = this.state.findIndex((s, i) => i > 0 && s.key === key)
      if (index < 0) {
        index = this.victim()
        if (index > 0) {
          const previous = this.state[index].key
          this.slots.load(index, adapter)
          this.state[index].key = key
          this.o.logger?.info(
            { model: key, base: this.o.base, slot: index, rank: adapter.rank, replaced: previous },
            'adapter loaded into a slot',
          )
        }
      }
      if (index > 0) {
        const s = this.state[index]
        s.refs++
        s.lastUsed = ++this.clock
        let released = false
        return {
          index,
          release: () => {
            if (released) return
            released = true
            s.refs--
            s.lastUsed = ++this.clock
            this.wake()
          },
        }
      }
      await this.waitForRelease(signal)
    }
  }

  /** Adapters in slots now, slot order (slot 0 excluded). */
  loaded(): (string | null)[] {
    return this.state.slice(1).map((s) => s.key)
  }

  /** A free slot, else the least recently used idle one; -1 when all are held. */
  private victim(): number {
    let best = -1
    for (let i = 1; i < this.state.length; i++) {
      const s = this.state[i]
      if (s.refs > 0) continue
      if (s.key === null) return i
      if (best < 0 || s.lastUsed < this.state[best].lastUsed) best = i
    }
    return best
  }

  private wake(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private waitForRelease(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== done)
        reject(generationCancelled())
      }
      const done = () => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      this.waiters.push(done)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}

const PEFT_A = /^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+)\.lora_A\.weight$/

/**
 * PEFT adapter weights (`base_model.model.<module>.lora_A/B.weight`, and the
 * trainable-token deltas of `lora.trainableTokens`) as a slot adapter.
 */
export function slotAdapterOf(
  weights: Weights,
  lora: { rank: number; alpha: number; trainableTokens?: number[] },
): SlotAdapter {
  const sites = new Map<string, { a: Float32Array; b: Float32Array }>()
  let bytes = 0
  for (const [name, a] of weights) {
    const m = PEFT_A.exec(name)
    if (!m) continue
    const b = weights.get(name.replace('.lora_A.', '.lora_B.'))
    if (!b) throw new Error(`adapter: '${name}' has no lora_B`)
    if (a.shape[0] !== lora.rank || b.shape[1] !== lora.rank)
      throw new Error(`adapter: '${name}' is not of rank ${lora.rank}`)
    sites.set(siteKey(Number(m[1]), m[2]), { a: a.data, b: b.data })
    bytes += (a.data.length + b.data.length) * 4
  }
  if (!sites.size) throw new Error('adapter: no LoRA matrices (lora_A/lora_B) in the weights')
  let tokens: SlotAdapter['tokens'] = null
  const ids = lora.trainableTokens ?? []
  if (ids.length) {
    const delta = weights.get(TOKENS_DELTA)
    if (!delta || delta.shape[0] !== ids.length)
      throw new Error(`adapter: ${ids.length} trainable tokens but no '${TOKENS_DELTA}' of as many rows`)
    tokens = { ids, delta: delta.data }
    bytes += delta.data.length * 4
  }
  return { rank: lora.rank, scale: lora.alpha / lora.rank, sites, tokens, bytes }
}
