/**
 * The LoRA-slot decoder (`loraSlotLinear`): one graph with stacked adapters
 * selected per row gives, row by row, what each merged model gives alone;
 * slot 0 is the base. Rows of one left-padded batch may use different slots.
 * With trainable-token slots (`loraSlotHooks`), the same holds for adapters
 * that also move some tokens' embedding rows (and the tied LM head's).
 */
import * as ort from 'onnxruntime-node'
import { beforeAll, describe, expect, it } from 'vitest'
import { headDim, type LlamaConfig, parseConfig } from '../config.js'
import { fuseSiblingMatMuls } from '../graph/fuse.js'
import { serializeGraph } from '../graph/onnx.js'
import { createSession } from '../ort-decode.js'
import type { Weights } from '../safetensors.js'
import { adapterNames, type LoraConfig, mergeLora, TOKENS_DELTA, targetedWeights } from '../train/lora.js'
import {
  buildLlamaGraph,
  LORA_DIMS,
  LORA_SLOT_INPUTS,
  LORA_TOKEN_INPUTS,
  PROJECTIONS,
  type Projection,
} from './graph.js'
import { exportServingOnnx } from './serving.js'
import { layerNames, mulberry32, randomWeights } from './weights.js'

const MODULES: Projection[] = ['q_proj', 'v_proj', 'up_proj', 'down_proj']

const c: LlamaConfig = parseConfig({
  vocabSize: 61,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 48,
  tieEmbeddings: false,
})

/** Random PEFT adapters (A [r, in], B [out, r]), B non-zero so the fine-tune differs from the base. */
function randomAdapter(w: Weights, lora: LoraConfig, seed: number): Weights {
  const rand = mulberry32(seed)
  const out: Weights = new Map()
  for (const name of targetedWeights(c, lora)) {
    const [o, i] = w.get(name)!.shape
    const n = adapterNames(name)
    const fill = (len: number) => Float32Array.from({ length: len }, () => (rand() * 2 - 1) * 0.3)
    out.set(n.a, { shape: [lora.rank, i], data: fill(lora.rank * i) })
    out.set(n.b, { shape: [o, lora.rank], data: fill(o * lora.rank) })
  }
  return out
}

const WEIGHT_OF: Record<Projection, keyof ReturnType<typeof layerNames>> = {
  q_proj: 'q',
  k_proj: 'k',
  v_proj: 'v',
  o_proj: 'o',
  gate_proj: 'gate',
  up_proj: 'up',
  down_proj: 'down',
}

/** Stacked slot feeds: slot 0 zeros, slot k+1 = adapters[k] transposed to [in, R] / [R, out], zero-padded. */
function slotFeeds(
  w: Weights,
  adapters: { weights: Weights; lora: LoraConfig }[],
): Record<string, ort.Tensor> {
  const S = adapters.length + 1
  const R = Math.max(...adapters.map((a) => a.lora.rank))
  const feeds: Record<string, ort.Tensor> = {
    [LORA_SLOT_INPUTS.scale]: new ort.Tensor(
      'float32',
      Float32Array.from([0, ...adapters.map((a) => a.lora.alpha / a.lora.rank)]),
      [S],
    ),
  }
  for (let layer = 0; layer < c.numLayers; layer++)
    for (const module of MODULES) {
      const name = layerNames(layer)[WEIGHT_OF[module]]
      const [outDim, inDim] = w.get(name)!.shape
      const A = new Float32Array(S * inDim * R)
      const B = new Float32Array(S * R * outDim)
      adapters.forEach(({ weights, lora }, k) => {
        const r = lora.rank
        const a = weights.get(adapterNames(name).a)!.data
        const b = weights.get(adapterNames(name).b)!.data
        for (let i = 0; i < inDim; i++)
          for (let j = 0; j < r; j++) A[(k + 1) * inDim * R + i * R + j] = a[j * inDim + i]
        for (let j = 0; j < r; j++)
          for (let o = 0; o < outDim; o++) B[(k + 1) * R * outDim + j * outDim + o] = b[o * r + j]
      })
      feeds[LORA_SLOT_INPUTS.a({ layer, module })] = new ort.Tensor('float32', A, [S, inDim, R])
      feeds[LORA_SLOT_INPUTS.b({ layer, module })] = new ort.Tensor('float32', B, [S, R, outDim])
    }
  return feeds
}

interface Run {
  logits: Float32Array
  present: Record<string, ort.Tensor>
}

/** One call: rows left-padded to the longest; past given as tensors (or empty). */
async function run(
  session: ort.InferenceSession,
  rows: number[][],
  extra: Record<string, ort.Tensor> = {},
  past?: { tensors: Record<string, ort.Tensor>; length: number; lens: number[] },
): Promise<Run> {
  const B = rows.length
  const S = Math.max(...rows.map((r) => r.length))
  const P = past?.length ?? 0
  const ids = new BigInt64Array(B * S)
  const pos = new BigInt64Array(B * S)
  const mask = new BigInt64Array(B * (P + S))
  rows.forEach((r, b) => {
    const pad = S - r.length
    const pastLen = past?.lens[b] ?? 0
    for (let t = 0; t < S; t++) {
      ids[b * S + t] = BigInt(t >= pad ? r[t - pad] : 0)
      pos[b * S + t] = BigInt(t >= pad ? pastLen + t - pad : 0)
    }
    for (let t = 0; t < P + S; t++)
      mask[b * (P + S) + t] = (t < P ? t >= P - pastLen : t - P >= pad) ? 1n : 0n
  })
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', ids, [B, S]),
    position_ids: new ort.Tensor('int64', pos, [B, S]),
    attention_mask: new ort.Tensor('int64', mask, [B, P + S]),
    ...extra,
  }
  const D = headDim(c)
  for (let i = 0; i < c.numLayers; i++)
    for (const kind of ['key', 'value']) {
      const name = `past_key_values.${i}.${kind}`
      feeds[name] =
        past?.tensors[name] ?? new ort.Tensor('float32', new Float32Array(0), [B, c.numKvHeads, 0, D])
    }
  const out = await session.run(feeds)
  const present: Record<string, ort.Tensor> = {}
  for (let i = 0; i < c.numLayers; i++)
    for (const kind of ['key', 'value']) present[`past_key_values.${i}.${kind}`] = out[`present.${i}.${kind}`]
  return { logits: out.logits.data as Float32Array, present }
}

/** Logits of the last position of row b of a [B, S, V] output. */
const lastRow = (r: Run, b: number, B: number) => {
  const V = c.vocabSize
  const S = r.logits.length / (B * V)
  return r.logits.subarray((b * S + S - 1) * V, (b * S + S) * V)
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

describe('LoRA-slot decoder graph', () => {
  let w: Weights
  const lora1: LoraConfig = { rank: 4, alpha: 8, targetModules: MODULES }
  const lora2: LoraConfig = { rank: 2, alpha: 8, targetModules: MODULES }
  let ad1: Weights
  let ad2: Weights
  let base: ort.InferenceSession
  let slots: ort.InferenceSession
  let merged1: ort.InferenceSession
  let merged2: ort.InferenceSession
  let feeds: (indices: number[]) => Record<string, ort.Tensor>

  beforeAll(async () => {
    w = randomWeights(c, { seed: 3, std: 0.1 })
    ad1 = randomAdapter(w, lora1, 11)
    ad2 = randomAdapter(w, lora2, 12)
    const open = async (weights: Weights, lora = false) => {
      const g = buildLlamaGraph(weights, c, 'float32', lora ? { lora: { modules: MODULES } } : {})
      fuseSiblingMatMuls(g) // as the engine serves it
      return createSession(serializeGraph(g))
    }
    base = await open(w)
    slots = await open(w, true)
    merged1 = await open(mergeLora(c, w, ad1, lora1))
    merged2 = await open(mergeLora(c, w, ad2, lora2))
    const stacked = slotFeeds(w, [
      { weights: ad1, lora: lora1 },
      { weights: ad2, lora: lora2 },
    ])
    feeds = (indices) => ({
      ...stacked,
      [LORA_SLOT_INPUTS.index]: new ort.Tensor('int64', BigInt64Array.from(indices, BigInt), [
        indices.length,
      ]),
    })
  })

  it('declares the slot inputs only when asked, on the targeted projections only', () => {
    const plain = buildLlamaGraph(w, c).inputs.map((v) => v.name)
    expect(plain.some((n) => n.startsWith('lora') || n === LORA_SLOT_INPUTS.index)).toBe(false)
    const g = buildLlamaGraph(w, c, 'float32', { lora: { modules: MODULES } })
    const names = g.inputs.map((v) => v.name)
    expect(names).toContain(LORA_SLOT_INPUTS.index)
    expect(names).toContain(LORA_SLOT_INPUTS.scale)
    for (let layer = 0; layer < c.numLayers; layer++)
      for (const module of PROJECTIONS) {
        const a = g.inputs.find((v) => v.name === LORA_SLOT_INPUTS.a({ layer, module }))
        expect(a !== undefined).toBe(MODULES.includes(module))
      }
    const q = g.inputs.find((v) => v.name === LORA_SLOT_INPUTS.a({ layer: 0, module: 'q_proj' }))!
    expect(q.shape).toEqual([LORA_DIMS.slots, c.hiddenSize, LORA_DIMS.rank])
    const down = g.inputs.find((v) => v.name === LORA_SLOT_INPUTS.b({ layer: 1, module: 'down_proj' }))!
    expect(down.shape).toEqual([LORA_DIMS.slots, LORA_DIMS.rank, c.hiddenSize])
  })

  it('slot k equals the merged model, slot 0 the base; mixed rows of one batch each equal their model alone', async () => {
    const prompts = [
      [5, 9, 2, 33, 17, 4],
      [8, 1, 40],
      [12, 12, 7, 60, 3],
      [22, 19, 30, 2],
    ]
    const slotOf = [1, 0, 2, 1]
    const modelOf = [merged1, base, merged2, merged1]
    const batch = await run(slots, prompts, feeds(slotOf))
    const alone = await Promise.all(prompts.map((p, b) => run(modelOf[b], [p])))
    prompts.forEach((_, b) => {
      expect(maxDiff(lastRow(batch, b, 4), lastRow(alone[b], 0, 1))).toBeLessThanOrEqual(1e-4)
    })
    // The fine-tunes differ from the base and from each other.
    const baseAlone = await run(base, [prompts[0]])
    expect(maxDiff(lastRow(alone[0], 0, 1), lastRow(baseAlone, 0, 1))).toBeGreaterThan(1e-2)
    const other = await run(merged2, [prompts[0]])
    expect(maxDiff(lastRow(alone[0], 0, 1), lastRow(other, 0, 1))).toBeGreaterThan(1e-2)

    // A decode step on the batch's KV cache, each row its next token, equals each model's own step.
    const next = prompts.map((p) => [p[0]])
    const lens = prompts.map((p) => p.length)
    const S = Math.max(...lens)
    const step = await run(slots, next, feeds(slotOf), { tensors: batch.present, length: S, lens })
    for (let b = 0; b < prompts.length; b++) {
      const own = await run(
        modelOf[b],
        next.slice(b, b + 1),
        {},
        {
          tensors: alone[b].present,
          length: lens[b],
          lens: [lens[b]],
        },
      )
      expect(maxDiff(lastRow(step, b, 4), lastRow(own, 0, 1))).toBeLessThanOrEqual(1e-4)
    }
  })

  it('the engine serving graph (models/llama/serving.ts) takes the same slots and gives the same rows', async () => {
    const serving = await createSession(exportServingOnnx(w, c, 'float32', { lora: { modules: MODULES } }))
    const prompts = [
      [5, 9, 2, 33, 17, 4],
      [8, 1, 40],
      [12, 12, 7, 60, 3],
    ]
    const slotOf = [1, 0, 2]
    const a = await run(serving, prompts, feeds(slotOf))
    const b = await run(slots, prompts, feeds(slotOf))
    for (let r = 0; r < prompts.length; r++)
      expect(maxDiff(lastRow(a, r, 3), lastRow(b, r, 3))).toBeLessThanOrEqual(1e-4)
    const lens = prompts.map((p) => p.length)
    const S = Math.max(...lens)
    const next = prompts.map((p) => [p[1]])
    const a2 = await run(serving, next, feeds(slotOf), { tensors: a.present, length: S, lens })
    const b2 = await run(slots, next, feeds(slotOf), { tensors: b.present, length: S, lens })
    for (let r = 0; r < prompts.length; r++)
      expect(maxDiff(lastRow(a2, r, 3), lastRow(b2, r, 3))).toBeLessThanOrEqual(1e-4)
  })

  it('slot 0 in every row is the base model', async () => {
    const prompts = [
      [3, 4, 5, 6],
      [7, 8],
    ]
    const batch = await run(slots, prompts, feeds([0, 0]))
    for (let b = 0; b < 2; b++) {
      const alone = await run(base, [prompts[b]])
      expect(maxDiff(lastRow(batch, b, 2), lastRow(alone, 0, 1))).toBeLessThanOrEqual(1e-5)
    }
  })
})

/** Token-slot feeds: slot k+1 holds adapters[k]'s token deltas in rows 1…, row 0 (and padding) zeros. */
function tokenFeeds(cfg: LlamaConfig, adapters: { weights: Weights; lora: LoraConfig }[]) {
  const S = adapters.length + 1
  const K = 1 + Math.max(...adapters.map((a) => a.lora.trainableTokens?.length ?? 0))
  const C = cfg.hiddenSize
  const map = new BigInt64Array(S * cfg.vocabSize)
  const ids = new BigInt64Array(S * K)
  const delta = new Float32Array(S * K * C)
  adapters.forEach(({ weights, lora }, k) => {
    const d = weights.get(TOKENS_DELTA)!.data
    lora.trainableTokens!.forEach((id, r) => {
      map[(k + 1) * cfg.vocabSize + id] = BigInt(r + 1)
      ids[(k + 1) * K + r + 1] = BigInt(id)
      delta.set(d.subarray(r * C, (r + 1) * C), ((k + 1) * K + r + 1) * C)
    })
  })
  return {
    [LORA_TOKEN_INPUTS.map]: new ort.Tensor('int64', map, [S, cfg.vocabSize]),
    [LORA_TOKEN_INPUTS.ids]: new ort.Tensor('int64', ids, [S, K]),
    [LORA_TOKEN_INPUTS.delta]: new ort.Tensor('float32', delta, [S, K, C]),
  }
}

describe('trainable-token slots', () => {
  // Tied (prometheus-mini's case: the rows are the LM head's too) and untied (the embedding only).
  for (const tied of [true, false]) {
    it(`slot k equals its merged model (LoRA and token deltas), slot 0 the base, in one batch (${tied ? 'tied' : 'untied'} head)`, async () => {
      const cfg = { ...c, tieEmbeddings: tied }
      const w = randomWeights(cfg, { seed: 5, std: 0.1 })
      const rand = mulberry32(21)
      const withTokens = (lora: LoraConfig, seed: number) => {
        const weights = randomAdapter(w, lora, seed)
        const n = lora.trainableTokens!.length
        const data = Float32Array.from({ length: n * cfg.hiddenSize }, () => (rand() * 2 - 1) * 0.5)
        weights.set(TOKENS_DELTA, { shape: [n, cfg.hiddenSize], data })
        return { weights, lora }
      }
      const a1 = withTokens(
        { rank: 4, alpha: 8, targetModules: MODULES, trainableTokens: [2, 5, 9, 33, 40] },
        31,
      )
      const a2 = withTokens({ rank: 2, alpha: 4, targetModules: MODULES, trainableTokens: [1, 5, 60] }, 32)
      const open = async (weights: Weights, o = {}) => {
        const g = buildLlamaGraph(weights, cfg, 'float32', o)
        fuseSiblingMatMuls(g)
        return createSession(serializeGraph(g))
      }
      const slotted = { lora: { modules: MODULES, tokens: true } }
      const graphs = [
        await open(w, slotted),
        await createSession(exportServingOnnx(w, cfg, 'float32', slotted)),
      ]
      const names = (await open(w, slotted)).inputNames
      expect(names).toEqual(expect.arrayContaining(Object.values(LORA_TOKEN_INPUTS)))
      const models = [
        await open(w),
        await open(mergeLora(cfg, w, a1.weights, a1.lora)),
        await open(mergeLora(cfg, w, a2.weights, a2.lora)),
      ]
      const stacked = { ...slotFeeds(w, [a1, a2]), ...tokenFeeds(cfg, [a1, a2]) }
      const feeds = (slots: number[]) => ({
        ...stacked,
        [LORA_SLOT_INPUTS.index]: new ort.Tensor('int64', BigInt64Array.from(slots, BigInt), [slots.length]),
      })
      // Prompts with trainable tokens (5 is in both adapters) and without.
      const prompts = [
        [5, 9, 2, 33, 17, 4],
        [8, 1, 40, 5],
        [12, 12, 7, 60, 3],
        [22, 19, 30, 5],
      ]
      const slotOf = [1, 0, 2, 2]
      for (const graph of graphs) {
        const batch = await run(graph, prompts, feeds(slotOf))
        for (let b = 0; b < prompts.length; b++) {
          const alone = await run(models[slotOf[b]], [prompts[b]])
          expect(maxDiff(lastRow(batch, b, 4), lastRow(alone, 0, 1))).toBeLessThanOrEqual(1e-4)
        }
      }
      // The token deltas matter: without them, slot 1 is another model.
      const noTokens = await open(mergeLora(cfg, w, a1.weights, { ...a1.lora, trainableTokens: [] }))
      const a = await run(models[1], [prompts[0]])
      const b = await run(noTokens, [prompts[0]])
      expect(maxDiff(lastRow(a, 0, 1), lastRow(b, 0, 1))).toBeGreaterThan(1e-2)
    })
  }
})
