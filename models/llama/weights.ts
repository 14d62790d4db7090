/**
 * Weight names and shapes of a Llama decoder, in Hugging Face's naming
 * (`model.layers.{i}.self_attn.q_proj.weight`, ...), so a `model.safetensors`
 * we write loads in transformers and one from transformers loads here.
 * Linear weights are [out_features, in_features] as in torch.nn.Linear.
 */
import type { LlamaConfig } from '../config.js'
import { headDim } from '../config.js'
import type { FloatTensor, Weights } from '../safetensors.js'

export const EMBED = 'model.embed_tokens.weight'
export const FINAL_NORM = 'model.norm.weight'
export const LM_HEAD = 'lm_head.weight'

export const layerNames = (i: number) => {
  const p = `model.layers.${i}`
  return {
    attnNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj.weight`,
    k: `${p}.self_attn.k_proj.weight`,
    v: `${p}.self_attn.v_proj.weight`,
    o: `${p}.self_attn.o_proj.weight`,
    mlpNorm: `${p}.post_attention_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  }
}

/** Every parameter name with its shape, in a stable order. */
export function weightShapes(c: LlamaConfig): Map<string, number[]> {
  const D = headDim(c)
  const shapes = new Map<string, number[]>([[EMBED, [c.vocabSize, c.hiddenSize]]])
  for (let i = 0; i < c.numLayers; i++) {
    const n = layerNames(i)
    shapes.set(n.attnNorm, [c.hiddenSize])
    shapes.set(n.q, [c.numHeads * D, c.hiddenSize])
    shapes.set(n.k, [c.numKvHeads * D, c.hiddenSize])
    shapes.set(n.v, [c.numKvHeads * D, c.hiddenSize])
    shapes.set(n.o, [c.hiddenSize, c.numHeads * D])
    shapes.set(n.mlpNorm, [c.hiddenSize])
    shapes.set(n.gate, [c.intermediateSize, c.hiddenSize])
    shapes.set(n.up, [c.intermediateSize, c.hiddenSize])
    shapes.set(n.down, [c.hiddenSize, c.intermediateSize])
  }
  shapes.set(FINAL_NORM, [c.hiddenSize])
  if (!c.tieEmbeddings) shapes.set(LM_HEAD, [c.vocabSize, c.hiddenSize])
  return shapes
}

export const parameterCount = (c: LlamaConfig): number =>
  [...weightShapes(c).values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0)

/** Throws naming the first missing or mis-shaped tensor. Extra tensors (e.g. a tied lm_head copy) are allowed. */
export function checkWeights(w: Weights, c: LlamaConfig): void {
  for (const [name, shape] of weightShapes(c)) {
    const t = w.get(name)
    if (!t) throw new Error(`weights: missing '${name}'`)
    if (t.shape.join(',') !== shape.join(','))
      throw new Error(`weights: '${name}' has shape [${t.shape}], config needs [${shape}]`)
  }
}

/** The LM head matrix [vocab, hidden]: the embedding when tied. */
export const lmHead = (w: Weights, c: LlamaConfig): FloatTensor => w.get(c.tieEmbeddings ? EMBED : LM_HEAD)!

/** Seeded PRNG (mulberry32): reproducible random weights without a dependency. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface InitOptions {
  seed?: number
  /** Standard deviation of the normal init of matrices; default 0.02 (HF initializer_range). */
  std?: number
}

/** Random weights: matrices ~ N(0, std²) (Box-Muller), norm weights = 1. */
export function randomWeights(c: LlamaConfig, o: InitOptions = {}): Weights {
  const rand = mulberry32(o.seed ?? 0)
  const std = o.std ?? 0.02
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
  const w: Weights = new Map()
  for (const [name, shape] of weightShapes(c)) {
    const n = shape.reduce((a, b) => a * b, 1)
    const data = new Float32Array(n)
    if (shape.length === 1) data.fill(1)
    else for (let i = 0; i < n; i++) data[i] = normal() * std
    w.set(name, { shape, data })
  }
  return w
}
