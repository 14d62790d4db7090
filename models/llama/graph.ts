/**
 * The Llama decoder as a `Graph`, in the decoder-with-past layout that
 * Hugging Face Optimum exports and transformers.js runs:
 *
 *   input_ids [B,S] int64, attention_mask [B,P+S] int64, position_ids [B,S] int64,
 *   past_key_values.{i}.key|value [B,KV,P,D]
 *   → logits [B,S,V], present.{i}.key|value [B,KV,P+S,D]
 *
 * Batching with left padding: attention_mask zeroes padded keys, position_ids
 * are per row, and the causal mask is built in-graph from the absolute key
 * index (key j is visible to query i when j <= P + i).
 *
 * Speed notes (onnxruntime CPU): linear weights are stored pre-transposed
 * [in, out] so MatMul needs no Transpose; the tied LM head uses Gemm(transB)
 * so the embedding is stored once; RoPE cos/sin are computed once per call
 * from position_ids and a [D/2] inv_freq initializer and shared by all layers;
 * rotate_half is a half swap times a sign-folded sin; grouped-query attention
 * folds the query groups into the row axis ([B,H,S,D] → [B,KV,G*S,D]) instead
 * of repeating K/V. RMSNorm, SiLU and Q·Kᵀ·scale are written in the primitive
 * patterns onnxruntime fuses (SimplifiedLayerNormalization, QuickGelu,
 * FusedMatMul). In fp16, RMSNorm and softmax run in fp32 as in transformers'
 * LlamaRMSNorm / eager attention.
 *
 * Projections go through a `Linear` hook (`attention`/`mlp` take one): plain
 * `x·W` by default; `loraSlotLinear` adds stacked LoRA adapters selected per
 * row (slot 0 is the base), so one graph serves several fine-tunes of its base.
 * `loraSlotHooks` adds, beside those, each row's trainable-token deltas (PEFT's
 * trainable tokens) to the embedding lookup and the tied LM head.
 *
 * Reference: transformers/models/llama/modeling_llama.py.
 */
import type { LlamaConfig } from '../config.js'
import { headDim } from '../config.js'
import { type DType, Graph, type Value } from '../graph/ir.js'
import { toHalf } from '../half.js'
import type { FloatTensor, Weights } from '../safetensors.js'
import { checkWeights, EMBED, FINAL_NORM, LM_HEAD, layerNames } from './weights.js'

export type FloatDType = 'float32' | 'float16'

/** Symbolic dims, named as Optimum names them (transformers.js resolves 'batch_size'). */
export const DIMS = {
  batch: 'batch_size',
  seq: 'sequence_length',
  past: 'past_sequence_length',
  total: 'past_sequence_length + sequence_length',
} as const

export interface BlockParams {
  attnNorm: Value
  /** Projections as [in, out]. */
  q: Value
  k: Value
  v: Value
  o: Value
  mlpNorm: Value
  gate: Value
  up: Value
  down: Value
}

export interface LlamaParams {
  /** [V, C] */
  embed: Value
  layers: BlockParams[]
  norm: Value
  /** Untied: [C, V] for MatMul. Tied: null, the head is Gemm(x, embed, transB). */
  lmHead: Value | null
}

/** The projections of a block, by their Hugging Face / PEFT module names. */
export const PROJECTIONS = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
] as const
export type Projection = (typeof PROJECTIONS)[number]

/** Where a projection sits: its layer and module. */
export interface ProjectionSite {
  layer: number
  module: Projection
}

/** Computes one projection of x by a weight stored [in, out]; hooks may add terms (LoRA slots). */
export type Linear = (g: Graph, x: Value, weight: Value, site: ProjectionSite) => Value

/** y = x·W. */
export const matmulLinear: Linear = (g, x, weight) => g.matmul(x, weight)

/** Graph inputs of a LoRA-slot decoder (see `loraSlotLinear`). */
export const LORA_SLOT_INPUTS = {
  /** [batch] int64: each row's slot; 0 is the base (all-zero adapter). */
  index: 'adapter_index',
  /** [slots]: alpha / rank of the adapter in each slot. */
  scale: 'lora_scale',
  /** [slots, in, rank] */
  a: (s: ProjectionSite) => `lora.${s.layer}.${s.module}.A`,
  /** [slots, rank, out] */
  b: (s: ProjectionSite) => `lora.${s.layer}.${s.module}.B`,
} as const

/** Graph inputs of a LoRA-slot decoder with trainable-token slots (see `loraSlotHooks`). */
export const LORA_TOKEN_INPUTS = {
  /** [slots, vocab] int64: the row of each token's delta in its slot (0: the token has none). */
  map: 'lora.tokens.map',
  /** [slots, tokens, hidden]: each slot's token deltas; row 0 is zeros. */
  delta: 'lora.tokens.delta',
  /** [slots, tokens] int64: the token each delta row belongs to (row 0 and padding: any, their delta is 0). */
  ids: 'lora.tokens.ids',
} as const

/** Symbolic dims of the slot inputs: the caller picks how many slots, the (padded) rank and token rows per run. */
export const LORA_DIMS = { slots: 'lora_slots', rank: 'lora_rank', tokens: 'lora_tokens' } as const

export interface LoraSlotOptions {
  /** Projections that take adapters; the others stay x·W. */
  modules: readonly Projection[]
  /** Trainable-token slots too (`loraSlotHooks`); default none. */
  tokens?: boolean
}

/**
 * What a decoder builder lets a caller add: the projections (`linear`), and
 * terms added to the embedding lookup (B,S,C) and to the logits (B,S,V) of the
 * final hidden states h (B,S,C).
 */
export interface DecoderHooks {
  linear: Linear
  embed?: (g: Graph, x: Value, inputIds: Value) => Value
  logits?: (g: Graph, h: Value, logits: Value) => Value
}

const hooksOf = (h: Linear | DecoderHooks): DecoderHooks => (typeof h === 'function' ? { linear: h } : h)

/**
 * Stacked LoRA adapters beside frozen base weights (Punica's BGMV, S-LoRA):
 * declares `adapter_index` [batch] int64 and `lora_scale` [slots], and returns
 * a `Linear` that, on each targeted projection, adds
 *
 *   y = x·W + s[idx]·((x·A[idx])·B[idx])
 *
 * with inputs `lora.<layer>.<module>.A` [slots, in, rank] and `.B` [slots,
 * rank, out] (our [in, out] layout: A and B are PEFT's lora_A/lora_B
 * transposed). A Gather picks each row's adapter, then two batched MatMuls.
 * An adapter of lower rank is padded with zeros; slot 0 (zeros) is the base.
 * `inner` computes the base term (default x·W), so hooks compose.
 */
export function loraSlotLinear(
  g: Graph,
  o: LoraSlotOptions,
  dtype: FloatDType,
  inner: Linear = matmulLinear,
): Linear {
  const index = g.input(LORA_SLOT_INPUTS.index, 'int64', [DIMS.batch])
  return slotLinear(g, o, dtype, index, inner)
}

/**
 * `loraSlotLinear` and, with `o.tokens`, trainable-token slots: PEFT's
 * trainable tokens (an adapter's own embedding rows for some tokens, as
 * deltas) per row, with inputs `lora.tokens.map` [slots, vocab] int64,
 * `lora.tokens.delta` [slots, tokens, hidden] and `lora.tokens.ids` [slots,
 * tokens] int64 (`LORA_TOKEN_INPUTS`):
 *
 *   embedding(id) = E[id] + delta[idx][map[idx][id]]            (row 0 of delta is zeros)
 *   logits[v]     = h·E[v] + Σ_k [ids[idx][k] = v] h·delta[idx][k]   (tied head only)
 *
 * The logits term is a ScatterElements-add of h·deltaᵀ ([B,S,tokens]) into
 * the columns of the slot's token ids, so nothing of size vocab × hidden is
 * built per row. An untied head keeps its own weights, as PEFT leaves them.
 */
export function loraSlotHooks(g: Graph, o: LoraSlotOptions, dtype: FloatDType, c: LlamaConfig): DecoderHooks {
  const index = g.input(LORA_SLOT_INPUTS.index, 'int64', [DIMS.batch])
  const linear = slotLinear(g, o, dtype, index, matmulLinear)
  if (!o.tokens) return { linear }
  const V = c.vocabSize
  const C = c.hiddenSize
  const map = g.input(LORA_TOKEN_INPUTS.map, 'int64', [LORA_DIMS.slots, V])
  const delta = g.input(LORA_TOKEN_INPUTS.delta, dtype, [LORA_DIMS.slots, LORA_DIMS.tokens, C])
  const ids = g.input(LORA_TOKEN_INPUTS.ids, 'int64', [LORA_DIMS.slots, LORA_DIMS.tokens])
  const K = g.gather(g.shape(delta), g.scalar(1, 'int64')) // rows per slot
  const rowStart = (n: Value) => g.unsqueeze(g.mul(index, n), [1]) // (B,1): the row's slot × n
  return {
    linear,
    embed: (g, x, inputIds) => {
      const row = g.gather(g.reshape(map, [-1]), g.add(rowStart(g.scalar(V, 'int64')), inputIds)) // (B,S)
      return g.add(x, g.gather(g.reshape(delta, [-1, C]), g.add(rowStart(K), row))) // (B,S,C)
    },
    logits: c.tieEmbeddings
      ? (g, h, logits) => {
          const rows = g.gather(delta, index) // (B,K,C)
          let add = g.matmul(h, g.transpose(rows, [0, 2, 1])) // (B,S,K)
          const at = g.expand(g.unsqueeze(g.gather(ids, index), [1]), g.shape(add)) // (B,S,K)
          // Accumulate in float32 (onnxruntime's ScatterElements add is defined there on every provider).
          const wide = dtype === 'float16' ? g.cast(logits, 'float32') : logits
          if (dtype === 'float16') add = g.cast(add, 'float32')
          const out = g.op('ScatterElements', [wide, at, add], {
            axis: { int: 2 },
            reduction: { string: 'add' },
          })[0]
          return dtype === 'float16' ? g.cast(out, 'float16') : out
        }
      : undefined,
  }
}

function slotLinear(g: Graph, o: LoraSlotOptions, dtype: FloatDType, index: Value, inner: Linear): Linear {
  const scale = g.input(LORA_SLOT_INPUTS.scale, dtype, [LORA_DIMS.slots])
  let rowScale: Value | undefined
  return (g, x, weight, site) => {
    const y = inner(g, x, weight, site)
    if (!o.modules.includes(site.module)) return y
    const [inDim, outDim] = weight.shape ?? []
    if (typeof inDim !== 'number' || typeof outDim !== 'number')
      throw new Error(`lora slots: ${site.module} of layer ${site.layer} needs a static [in, out] weight`)
    const a = g.input(LORA_SLOT_INPUTS.a(site), dtype, [LORA_DIMS.slots, inDim, LORA_DIMS.rank])
    const b = g.input(LORA_SLOT_INPUTS.b(site), dtype, [LORA_DIMS.slots, LORA_DIMS.rank, outDim])
    rowScale ??= g.reshape(g.gather(scale, index), [-1, 1, 1]) // (B,1,1)
    const delta = g.matmul(g.matmul(x, g.gather(a, index)), g.gather(b, index)) // (B,S,r)·(B,r,out)
    return g.add(y, g.mul(delta, rowScale))
  }
}

interface Rope {
  /** [B,1,S,D] */
  cos: Value
  /** sin with the rotate_half sign folded in: [-sin, sin] halves, [B,1,S,D] */
  sinSigned: Value
}

interface Kv {
  key: Value
  value: Value
}

/** Weights as initializers in `dtype`, linear layers transposed to [in, out]. */
export function weightParams(g: Graph, w: Weights, c: LlamaConfig, dtype: FloatDType): LlamaParams {
  checkWeights(w, c)
  const plain = (name: string) => tensorInit(g, name, w.get(name)!, dtype)
  const linear = (name: string) => tensorInit(g, `${name}.T`, transpose2d(w.get(name)!), dtype)
  return {
    embed: plain(EMBED),
    layers: Array.from({ length: c.numLayers }, (_, i) => {
      const n = layerNames(i)
      return {
        attnNorm: plain(n.attnNorm),
        q: linear(n.q),
        k: linear(n.k),
        v: linear(n.v),
        o: linear(n.o),
        mlpNorm: plain(n.mlpNorm),
        gate: linear(n.gate),
        up: linear(n.up),
        down: linear(n.down),
      }
    }),
    norm: plain(FINAL_NORM),
    lmHead: c.tieEmbeddings ? null : linear(LM_HEAD),
  }
}

/** The full decoder-with-past graph with the given parameters; `linear` computes the projections. */
export function buildDecoder(
  g: Graph,
  p: LlamaParams,
  c: LlamaConfig,
  dtype: FloatDType,
  hooks: Linear | DecoderHooks = matmulLinear,
): void {
  const { linear, embed, logits: logitsHook } = hooksOf(hooks)
  const D = headDim(c)
  const { batch: B, seq: S, past: P, total: T } = DIMS
  const inputIds = g.input('input_ids', 'int64', [B, S])
  const attentionMask = g.input('attention_mask', 'int64', [B, T])
  const positionIds = g.input('position_ids', 'int64', [B, S])
  const past: Kv[] = Array.from({ length: c.numLayers }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, dtype, [B, c.numKvHeads, P, D]),
    value: g.input(`past_key_values.${i}.value`, dtype, [B, c.numKvHeads, P, D]),
  }))

  const rope = ropeTables(g, positionIds, c, dtype)
  const allowed = attentionAllowed(g, inputIds, attentionMask)
  let x = g.gather(p.embed, inputIds) // (B,S,C)
  if (embed) x = embed(g, x, inputIds)
  const present: Kv[] = []
  for (let i = 0; i < c.numLayers; i++) {
    const w = p.layers[i]
    const h = rmsNorm(g, x, w.attnNorm, c.rmsNormEps)
    const attn = attention(g, h, w, c, rope, allowed, past[i], linear, i)
    present.push(attn.present)
    x = g.add(x, attn.out)
    x = g.add(x, mlp(g, rmsNorm(g, x, w.mlpNorm, c.rmsNormEps), w, linear, i))
  }
  x = rmsNorm(g, x, p.norm, c.rmsNormEps)
  const logits = lmHeadLogits(g, x, p, c, inputIds)
  g.output(logitsHook ? logitsHook(g, x, logits) : logits, 'logits', [B, S, c.vocabSize])
  present.forEach((kv, i) => {
    g.output(kv.key, `present.${i}.key`, [B, c.numKvHeads, T, D])
    g.output(kv.value, `present.${i}.value`, [B, c.numKvHeads, T, D])
  })
}

export interface LlamaGraphOptions {
  /** Stacked LoRA slots on these projections (`loraSlotLinear`); default none. */
  lora?: LoraSlotOptions
}

/** Builds the ONNX graph of a Llama model with its weights as initializers. */
export function buildLlamaGraph(
  w: Weights,
  c: LlamaConfig,
  dtype: FloatDType = 'float32',
  o: LlamaGraphOptions = {},
): Graph {
  const g = new Graph('prometheus_mini')
  const params = weightParams(g, w, c, dtype)
  buildDecoder(g, params, c, dtype, o.lora ? loraSlotHooks(g, o.lora, dtype, c) : matmulLinear)
  return g
}

/** x / sqrt(mean(x²) + eps) * weight, in fp32 (ORT fuses this to SimplifiedLayerNormalization). */
export function rmsNorm(g: Graph, x: Value, weight: Value, eps: number): Value {
  const xf = g.cast(x, 'float32')
  const meanSquare = g.reduceMean(g.pow(xf, g.scalar(2)), [-1])
  const y = g.div(xf, g.sqrt(g.add(meanSquare, g.scalar(eps))))
  return g.mul(g.cast(y, x.dtype), weight)
}

/** down(silu(gate(x)) * up(x)); silu(a) = a * sigmoid(a). */
export function mlp(g: Graph, x: Value, w: BlockParams, linear: Linear = matmulLinear, layer = 0): Value {
  const gate = linear(g, x, w.gate, { layer, module: 'gate_proj' })
  const up = linear(g, x, w.up, { layer, module: 'up_proj' })
  return linear(g, g.mul(g.mul(gate, g.sigmoid(gate)), up), w.down, { layer, module: 'down_proj' })
}

/** Self-attention with RoPE, KV cache and grouped-query heads. */
export function attention(
  g: Graph,
  x: Value,
  w: BlockParams,
  c: LlamaConfig,
  rope: Rope,
  allowed: Value,
  past: Kv,
  linear: Linear = matmulLinear,
  layer = 0,
): { out: Value; present: Kv } {
  const D = headDim(c)
  const H = c.numHeads
  const KV = c.numKvHeads
  const proj = (weight: Value, module: Projection) => linear(g, x, weight, { layer, module })
  const q = applyRope(g, splitHeads(g, proj(w.q, 'q_proj'), H, D), rope) // (B,H,S,D)
  const k = applyRope(g, splitHeads(g, proj(w.k, 'k_proj'), KV, D), rope) // (B,KV,S,D)
  const v = splitHeads(g, proj(w.v, 'v_proj'), KV, D)
  const keys = g.concat([past.key, k], 2) // (B,KV,T,D)
  const values = g.concat([past.value, v], 2)
  const grouped = H !== KV
  // Head h reads kv head floor(h / G): [B,H,S,D] is [B,KV,G*S,D] in memory, so a Reshape groups them.
  const qg = grouped ? g.reshape(q, [0, KV, -1, D]) : q
  let scores = g.mul(g.matmul(qg, g.transpose(keys, [0, 1, 3, 2])), g.scalar(1 / Math.sqrt(D), q.dtype))
  if (grouped) scores = g.reshape(scores, [0, H, -1, 0]) // (B,H,S,T)
  const masked = g.where(allowed, g.cast(scores, 'float32'), g.scalar(-3.4028234663852886e38))
  let probs = g.cast(g.softmax(masked, -1), q.dtype)
  if (grouped) probs = g.reshape(probs, [0, KV, -1, 0]) // (B,KV,G*S,T)
  let y = g.matmul(probs, values)
  if (grouped) y = g.reshape(y, [0, H, -1, D]) // (B,H,S,D)
  y = g.reshape(g.transpose(y, [0, 2, 1, 3]), [0, 0, H * D]) // (B,S,H*D)
  return { out: linear(g, y, w.o, { layer, module: 'o_proj' }), present: { key: keys, value: values } }
}

/** (B,S,N*D) → (B,N,S,D) */
function splitHeads(g: Graph, x: Value, n: number, d: number): Value {
  return g.transpose(g.reshape(x, [0, 0, n, d]), [0, 2, 1, 3])
}

/** x*cos + rotate_half(x)*sin, with rotate_half(x)*sin = [x2, x1] * [-sin, sin]. */
export function applyRope(g: Graph, x: Value, rope: Rope): Value {
  const d = rope.cos.shape?.[3]
  if (typeof d !== 'number') throw new Error('rope: table needs a static head dim')
  const [x1, x2] = g.split(x, [d / 2, d / 2], -1)
  return g.add(g.mul(x, rope.cos), g.mul(g.concat([x2, x1], -1), rope.sinSigned))
}

/** cos/sin tables [B,1,S,D] from position_ids and inv_freq = theta^(-2i/D), computed in fp32. */
export function ropeTables(g: Graph, positionIds: Value, c: LlamaConfig, dtype: DType): Rope {
  const D = headDim(c)
  const invFreq = g.initializer('rope.inv_freq', 'float32', [D / 2], ropeInvFreq(c))
  const pos = g.cast(g.unsqueeze(positionIds, [1, 3]), 'float32') // (B,1,S,1)
  const freqs = g.mul(pos, invFreq) // (B,1,S,D/2)
  const cosHalf = g.cos(freqs)
  const sinHalf = g.sin(freqs)
  const cos = g.cast(g.concat([cosHalf, cosHalf], -1), dtype)
  const sinSigned = g.cast(g.concat([g.neg(sinHalf), sinHalf], -1), dtype)
  const shape = ['batch_size', 1, 'sequence_length', D]
  return { cos: Object.assign(cos, { shape }), sinSigned: Object.assign(sinSigned, { shape }) }
}

/** inv_freq[i] = 1 / theta^(2i/D) in float32, as transformers computes it. */
export function ropeInvFreq(c: LlamaConfig): Float32Array {
  const D = headDim(c)
  return Float32Array.from({ length: D / 2 }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / D))
}

/** bool [B,1,S,T]: key j visible to query i when attention_mask[b,j] = 1 and j <= P + i. */
export function attentionAllowed(g: Graph, inputIds: Value, attentionMask: Value): Value {
  const one = g.scalar(1, 'int64')
  const seqLen = g.gather(g.shape(inputIds), one)
  const total = g.gather(g.shape(attentionMask), one)
  const keyPos = g.range(g.scalar(0, 'int64'), total, one) // (T)
  const queryPos = g.range(g.sub(total, seqLen), total, one) // (S) absolute positions of the queries
  const causal = g.lessOrEqual(g.unsqueeze(keyPos, [0]), g.unsqueeze(queryPos, [1])) // (S,T)
  const notPad = g.cast(g.unsqueeze(attentionMask, [1, 2]), 'bool') // (B,1,1,T)
  return g.and(causal, notPad)
}

/** logits (B,S,V): Gemm with transB on the tied embedding, else MatMul with lm_head [C,V]. */
function lmHeadLogits(g: Graph, x: Value, p: LlamaParams, c: LlamaConfig, inputIds: Value): Value {
  if (p.lmHead) return g.matmul(x, p.lmHead)
  const flat = g.reshape(x, [-1, c.hiddenSize])
  const logits = g.gemm(flat, p.embed, null, { transB: true })
  return g.reshape(logits, g.concat([g.shape(inputIds), g.ints([c.vocabSize])], 0))
}

function tensorInit(g: Graph, name: string, t: FloatTensor, dtype: FloatDType): Value {
  return g.initializer(name, dtype, t.shape, dtype === 'float16' ? toHalf(t.data) : t.data)
}

function transpose2d(t: FloatTensor): FloatTensor {
  const [rows, cols] = t.shape
  const out = new Float32Array(rows * cols)
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) out[k * rows + r] = t.data[r * cols + k]
  return { shape: [cols, rows], data: out }
}
