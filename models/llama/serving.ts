/**
 * The engine's serving graph: the same model and the same I/O contract as
 * `buildLlamaGraph` (Optimum's decoder-with-past: input_ids, attention_mask,
 * position_ids, past_key_values.* → logits, present.*), built with the fused
 * operators of ONNX opset 23 that onnxruntime implements on CPU and GPU:
 *
 * - `Attention` (q/kv heads, past concatenation, mask, softmax, ·V in one node)
 *   instead of ~25 primitive nodes per layer;
 * - `RotaryEmbedding` reading cos/sin tables precomputed for every position
 *   (the exported graph computes them per call from position_ids);
 * - `RMSNormalization` instead of the primitive pattern;
 * - logits of the last position only ([B, 1, V]): the engine never reads the
 *   others, and the LM head is the largest MatMul of a prefill.
 *
 * Per decode step that is ~60 nodes instead of ~190, which is most of the
 * cost of a small model at batch 1 (onnxruntime's per-node overhead dominates
 * the arithmetic). The folder's `onnx/model.onnx` stays the portable export
 * (opset 17, what transformers.js and other runtimes load); the worker builds
 * this graph from the folder's safetensors when it opens one of our models.
 */

import onnxProto from 'onnx-proto'
import type { LlamaConfig } from '../config.js'
import { headDim } from '../config.js'
import { fuseSiblingMatMuls } from '../graph/fuse.js'
import { Graph, type Graph as GraphT, type Value } from '../graph/ir.js'
import { serializeGraph } from '../graph/onnx.js'
import { fromHalf } from '../half.js'
import type { Weights } from '../safetensors.js'
import {
  attentionAllowed,
  type BlockParams,
  type DecoderHooks,
  DIMS,
  type FloatDType,
  type Linear,
  type LlamaGraphOptions,
  type LlamaParams,
  loraSlotHooks,
  matmulLinear,
  mlp,
  type Projection,
  ropeInvFreq,
  weightParams,
} from './graph.js'
import { weightShapes } from './weights.js'

/** The default-domain opset of the serving graph (Attention, RotaryEmbedding, RMSNormalization: 23). */
export const SERVING_OPSET = 23

/** Marks the graph so the worker can tell it from an export (onnx metadata_props). */
export const SERVING_GRAPH_METADATA = { graph: 'prometheus-serving', opset: String(SERVING_OPSET) }

/** `o.lora`: stacked LoRA slots on those projections (and token slots), as `buildLlamaGraph` takes them (graph.ts `loraSlotHooks`). */
export function buildServingGraph(
  w: Weights,
  c: LlamaConfig,
  dtype: FloatDType = 'float32',
  o: LlamaGraphOptions = {},
): GraphT {
  const g = new Graph('prometheus_serving')
  const p = weightParams(g, w, c, dtype)
  buildServingDecoder(g, p, c, dtype, o.lora ? loraSlotHooks(g, o.lora, dtype, c) : { linear: matmulLinear })
  fuseSiblingMatMuls(g)
  return g
}

/** ONNX bytes of the serving graph. */
export function exportServingOnnx(
  w: Weights,
  c: LlamaConfig,
  dtype: FloatDType = 'float32',
  o: LlamaGraphOptions = {},
): Uint8Array {
  return serializeGraph(buildServingGraph(w, c, dtype, o), {
    opset: SERVING_OPSET,
    docString: 'PrometheusGPT serving graph (opset 23 fused attention)',
    metadata: SERVING_GRAPH_METADATA,
  })
}

/**
 * The weights inside an ONNX graph our exporter wrote (producer
 * 'prometheus-gpt'), as safetensors names and [out, in] shapes, or null when
 * the graph is not ours or lacks one of them. The worker builds the serving
 * graph from these rather than from the folder's safetensors because the
 * export is what the model has always served (a folder may keep its
 * safetensors narrowed to float16 and its graph in float32, as
 * prometheus-mini does). Our export stores linear weights transposed
 * (`<name>.T`, [in, out]) and, after `fuseSiblingMatMuls`, side by side
 * (`<a>.T+<b>.T+…`, [in, Σout]).
 */
export function weightsFromExport(bytes: Uint8Array, c: LlamaConfig): Weights | null {
  if (!isOurExport(bytes)) return null
  const m = onnxProto.onnx.ModelProto.decode(bytes)
  if (m.producerName !== 'prometheus-gpt' || !m.graph) return null
  const shapes = weightShapes(c)
  const weights: Weights = new Map()
  for (const init of m.graph.initializer ?? []) {
    const raw = init.rawData
    if (!raw || !init.name) continue
    const bytesOf = new Uint8Array(raw) // aligned copy
    let data: Float32Array
    if (init.dataType === 1) data = new Float32Array(bytesOf.buffer, 0, bytesOf.byteLength / 4)
    else if (init.dataType === 10) data = fromHalf(new Uint16Array(bytesOf.buffer, 0, bytesOf.byteLength / 2))
    else continue
    const dims = (init.dims ?? []).map(Number)
    const parts = init.name.split('+')
    if (parts.length === 1 && !init.name.endsWith('.T')) {
      if (shapes.has(init.name)) weights.set(init.name, { shape: dims, data })
      continue
    }
    // [in, Σout] → each part's [out, in]
    const [K, N] = dims
    let col = 0
    for (const part of parts) {
      const name = part.replace(/\.T$/, '')
      const shape = shapes.get(name)
      if (!part.endsWith('.T') || !shape || shape[1] !== K) return null
      const out = shape[0]
      const t = new Float32Array(out * K)
      for (let k = 0; k < K; k++) for (let o = 0; o < out; o++) t[o * K + k] = data[k * N + col + o]
      weights.set(name, { shape: [out, K], data: t })
      col += out
    }
  }
  for (const [name, shape] of shapes) {
    const w = weights.get(name)
    if (!w || w.shape.join() !== shape.join()) return null
  }
  return weights
}

/**
 * Cheap check before decoding a whole model: protobuf writes ModelProto's
 * producer_name (field 2) right after ir_version, so it sits in the first bytes.
 */
export function isOurExport(bytes: Uint8Array): boolean {
  return new TextDecoder('latin1').decode(bytes.subarray(0, 64)).includes('prometheus-gpt')
}

function buildServingDecoder(
  g: Graph,
  p: LlamaParams,
  c: LlamaConfig,
  dtype: FloatDType,
  hooks: DecoderHooks,
): void {
  const { linear, embed, logits: logitsHook } = hooks
  const D = headDim(c)
  const { batch: B, seq: S, past: P, total: T } = DIMS
  const inputIds = g.input('input_ids', 'int64', [B, S])
  const attentionMask = g.input('attention_mask', 'int64', [B, T])
  const positionIds = g.input('position_ids', 'int64', [B, S])
  const past = Array.from({ length: c.numLayers }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, dtype, [B, c.numKvHeads, P, D]),
    value: g.input(`past_key_values.${i}.value`, dtype, [B, c.numKvHeads, P, D]),
  }))

  const rope = ropeCaches(g, c, dtype)
  // Additive mask [B,1,S,T]: 0 where visible, the lowest float elsewhere. A finite
  // value (not -inf) keeps a fully padded query row finite, as in the export.
  const lowest = dtype === 'float16' ? -65504 : -3.4028234663852886e38
  const mask = g.where(
    attentionAllowed(g, inputIds, attentionMask),
    g.scalar(0, dtype),
    g.scalar(lowest, dtype),
  )
  let x = g.gather(p.embed, inputIds) // (B,S,C)
  if (embed) x = embed(g, x, inputIds)
  for (let i = 0; i < c.numLayers; i++) {
    const w = p.layers[i]
    const attn = attention(g, rmsNorm(g, x, w.attnNorm, c), w, c, rope, mask, past[i], positionIds, linear, i)
    g.output(attn.presentKey, `present.${i}.key`, [B, c.numKvHeads, T, D])
    g.output(attn.presentValue, `present.${i}.value`, [B, c.numKvHeads, T, D])
    x = g.add(x, attn.out)
    x = g.add(x, mlp(g, rmsNorm(g, x, w.mlpNorm, c), w, linear, i))
  }
  // Only the last position's logits: left padding puts every row's last token there.
  const last = g.op('Slice', [x, g.ints([-1]), g.ints([2 ** 62]), g.ints([1])])[0] // (B,1,C)
  const h = g.reshape(rmsNorm(g, last, p.norm, c), [-1, c.hiddenSize])
  const logits = g.reshape(p.lmHead ? g.matmul(h, p.lmHead) : g.gemm(h, p.embed, null, { transB: true }), [
    -1,
    1,
    c.vocabSize,
  ])
  // Outputs are listed after the presents; the decoder reads them by name.
  g.output(logitsHook ? logitsHook(g, g.reshape(h, [-1, 1, c.hiddenSize]), logits) : logits, 'logits', [
    B,
    1,
    c.vocabSize,
  ])
}

function rmsNorm(g: Graph, x: Value, weight: Value, c: LlamaConfig): Value {
  // stash_type 1: computed in float32 for fp16 graphs too, as transformers' LlamaRMSNorm.
  return g.op('RMSNormalization', [x, weight], {
    axis: { int: -1 },
    epsilon: { float: c.rmsNormEps },
    stash_type: { int: 1 },
  })[0]
}

interface RopeCaches {
  /** [maxPositions, D/2] */
  cos: Value
  sin: Value
}

/**
 * cos/sin of position × inv_freq for every position the model accepts, in
 * float32 arithmetic as transformers computes them (then cast to the graph's dtype).
 */
function ropeCaches(g: Graph, c: LlamaConfig, dtype: FloatDType): RopeCaches {
  const half = headDim(c) / 2
  const invFreq = ropeInvFreq(c)
  const n = c.maxPositions
  const cos = new Float32Array(n * half)
  const sin = new Float32Array(n * half)
  for (let pos = 0; pos < n; pos++)
    for (let i = 0; i < half; i++) {
      const f = Math.fround(pos * invFreq[i])
      cos[pos * half + i] = Math.cos(f)
      sin[pos * half + i] = Math.sin(f)
    }
  const table = (name: string, data: Float32Array) =>
    dtype === 'float32'
      ? g.initializer(name, 'float32', [n, half], data)
      : g.cast(g.initializer(name, 'float32', [n, half], data), dtype)
  return { cos: table('rope.cos_cache', cos), sin: table('rope.sin_cache', sin) }
}

function attention(
  g: Graph,
  x: Value,
  w: BlockParams,
  c: LlamaConfig,
  rope: RopeCaches,
  mask: Value,
  past: { key: Value; value: Value },
  positionIds: Value,
  linear: Linear,
  layer: number,
): { out: Value; presentKey: Value; presentValue: Value } {
  const proj = (t: Value, weight: Value, module: Projection) => linear(g, t, weight, { layer, module })
  const rotate = (t: Value, heads: number) =>
    g.op('RotaryEmbedding', [t, rope.cos, rope.sin, positionIds], {
      interleaved: { int: 0 },
      num_heads: { int: heads },
    })[0]
  const q = rotate(proj(x, w.q, 'q_proj'), c.numHeads) // (B,S,H*D)
  const k = rotate(proj(x, w.k, 'k_proj'), c.numKvHeads) // (B,S,KV*D)
  const v = proj(x, w.v, 'v_proj')
  const [y, presentKey, presentValue] = g.op(
    'Attention',
    [q, k, v, mask, past.key, past.value],
    {
      q_num_heads: { int: c.numHeads },
      kv_num_heads: { int: c.numKvHeads },
      scale: { float: 1 / Math.sqrt(headDim(c)) },
    },
    { outputs: 3 },
  )
  return { out: proj(y, w.o, 'o_proj'), presentKey, presentValue }
}
