/**
 * Reference forward pass of the Llama decoder in plain TypeScript: one
 * sequence, no cache, float32 arrays, loops that read like the math. It is the
 * oracle the ONNX export is tested against, not a fast path.
 *
 * Reference: transformers/models/llama/modeling_llama.py (LlamaForCausalLM, eager attention).
 */
import type { LlamaConfig } from '../config.js'
import { headDim } from '../config.js'
import type { Weights } from '../safetensors.js'
import { ropeInvFreq } from './graph.js'
import { checkWeights, EMBED, FINAL_NORM, layerNames, lmHead } from './weights.js'

/** A row-major [rows, cols] matrix. */
interface Mat {
  rows: number
  cols: number
  data: Float32Array
}

export interface ReferenceOptions {
  /** Position of each token; default 0..S-1. */
  positionIds?: number[]
}

/** Logits [S, V] (row-major) for token ids `ids`. */
export function referenceForward(
  w: Weights,
  c: LlamaConfig,
  ids: number[],
  o: ReferenceOptions = {},
): Float32Array {
  checkWeights(w, c)
  const S = ids.length
  const positions = o.positionIds ?? ids.map((_, i) => i)
  const C = c.hiddenSize
  const embed = w.get(EMBED)!.data
  let x: Mat = { rows: S, cols: C, data: new Float32Array(S * C) }
  for (let t = 0; t < S; t++) x.data.set(embed.subarray(ids[t] * C, (ids[t] + 1) * C), t * C)
  for (let i = 0; i < c.numLayers; i++) {
    const n = layerNames(i)
    x = add(x, attentionForward(w, c, i, rmsNormForward(x, w.get(n.attnNorm)!.data, c.rmsNormEps), positions))
    const h = rmsNormForward(x, w.get(n.mlpNorm)!.data, c.rmsNormEps)
    x = add(x, mlpForward(w, i, h))
  }
  x = rmsNormForward(x, w.get(FINAL_NORM)!.data, c.rmsNormEps)
  return linear(x, lmHead(w, c).data, c.vocabSize).data
}

/** y = x / sqrt(mean(x²) + eps) * weight, per row. */
export function rmsNormForward(x: Mat, weight: Float32Array, eps: number): Mat {
  const out = new Float32Array(x.data.length)
  for (let r = 0; r < x.rows; r++) {
    let ss = 0
    for (let k = 0; k < x.cols; k++) ss += x.data[r * x.cols + k] ** 2
    const inv = 1 / Math.sqrt(ss / x.cols + eps)
    for (let k = 0; k < x.cols; k++) out[r * x.cols + k] = x.data[r * x.cols + k] * inv * weight[k]
  }
  return { rows: x.rows, cols: x.cols, data: out }
}

/** y = x Wᵀ with W [out, in] as in torch.nn.Linear. */
export function linear(x: Mat, weight: Float32Array, out: number): Mat {
  const y = new Float32Array(x.rows * out)
  for (let r = 0; r < x.rows; r++)
    for (let o = 0; o < out; o++) {
      let s = 0
      for (let k = 0; k < x.cols; k++) s += x.data[r * x.cols + k] * weight[o * x.cols + k]
      y[r * out + o] = s
    }
  return { rows: x.rows, cols: out, data: y }
}

function add(a: Mat, b: Mat): Mat {
  return { rows: a.rows, cols: a.cols, data: a.data.map((v, i) => v + b.data[i]) }
}

/** down(silu(gate x) * up x) */
function mlpForward(w: Weights, layer: number, x: Mat): Mat {
  const n = layerNames(layer)
  const [I] = w.get(n.gate)!.shape
  const gate = linear(x, w.get(n.gate)!.data, I)
  const up = linear(x, w.get(n.up)!.data, I)
  const h = gate.data.map((g, i) => (g / (1 + Math.exp(-g))) * up.data[i])
  return linear({ rows: x.rows, cols: I, data: h }, w.get(n.down)!.data, x.cols)
}

/** Rotates each head vector: out = v*cos + rotate_half(v)*sin, rotate_half(v) = [-v2, v1]. */
function rope(v: Float32Array, offset: number, D: number, pos: number, invFreq: Float32Array): void {
  const half = D / 2
  for (let i = 0; i < half; i++) {
    const angle = Math.fround(pos * invFreq[i])
    const cos = Math.cos(angle)
    const sin = Math.sin(angle)
    const a = v[offset + i]
    const b = v[offset + half + i]
    v[offset + i] = a * cos - b * sin
    v[offset + half + i] = b * cos + a * sin
  }
}

/** Causal multi-head attention; query head h reads kv head floor(h / (H / KV)). */
function attentionForward(w: Weights, c: LlamaConfig, layer: number, x: Mat, positions: number[]): Mat {
  const n = layerNames(layer)
  const D = headDim(c)
  const H = c.numHeads
  const KV = c.numKvHeads
  const S = x.rows
  const q = linear(x, w.get(n.q)!.data, H * D).data // (S, H*D)
  const k = linear(x, w.get(n.k)!.data, KV * D).data // (S, KV*D)
  const v = linear(x, w.get(n.v)!.data, KV * D).data
  const invFreq = ropeInvFreq(c)
  for (let t = 0; t < S; t++) {
    for (let h = 0; h < H; h++) rope(q, t * H * D + h * D, D, positions[t], invFreq)
    for (let h = 0; h < KV; h++) rope(k, t * KV * D + h * D, D, positions[t], invFreq)
  }
  const y = new Float32Array(S * H * D)
  const scale = 1 / Math.sqrt(D)
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / (H / KV))
    for (let t = 0; t < S; t++) {
      const scores = new Float64Array(t + 1) // causal: keys 0..t
      let max = Number.NEGATIVE_INFINITY
      for (let j = 0; j <= t; j++) {
        let s = 0
        for (let d = 0; d < D; d++) s += q[t * H * D + h * D + d] * k[j * KV * D + kvh * D + d]
        scores[j] = s * scale
        max = Math.max(max, scores[j])
      }
      let sum = 0
      for (let j = 0; j <= t; j++) sum += scores[j] = Math.exp(scores[j] - max)
      for (let j = 0; j <= t; j++)
        for (let d = 0; d < D; d++)
          y[t * H * D + h * D + d] += (scores[j] / sum) * v[j * KV * D + kvh * D + d]
    }
  }
  return linear({ rows: S, cols: H * D, data: y }, w.get(n.o)!.data, c.hiddenSize)
}
