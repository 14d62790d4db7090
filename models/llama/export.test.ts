import type { InferenceSession } from 'onnxruntime-node'
import { beforeAll, describe, expect, it } from 'vitest'
import { type LlamaConfig, type LlamaConfigInput, parseConfig } from '../config.js'
import { describeOnnx } from '../graph/onnx.js'
import { createSession, emptyCache, type KvCache, step } from '../ort-decode.js'
import type { Weights } from '../safetensors.js'
import { exportOnnx } from './export.js'
import { referenceForward } from './reference.js'
import { randomWeights } from './weights.js'

/** Largest |a - b| over the first n elements. */
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

const tokens = (n: number, vocab: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (i * 7 + seed * 13 + 1) % vocab)

const full = (ids: number[]) => ({ ids: [ids], mask: [ids.map(() => 1)], positions: [ids.map((_, i) => i)] })

interface Case {
  name: string
  config: LlamaConfigInput
}

const CASES: Case[] = [
  {
    name: 'multi-head, tied embeddings',
    config: { vocabSize: 61, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 4, intermediateSize: 40 },
  },
  {
    name: 'grouped-query (8 heads, 2 kv), untied',
    config: {
      vocabSize: 97,
      hiddenSize: 64,
      numLayers: 2,
      numHeads: 8,
      numKvHeads: 2,
      intermediateSize: 96,
      tieEmbeddings: false,
      ropeTheta: 500000,
      rmsNormEps: 1e-6,
    },
  },
  {
    name: 'multi-query (1 kv head), 3 layers, head dim 6',
    config: { vocabSize: 50, hiddenSize: 36, numLayers: 3, numHeads: 6, numKvHeads: 1, intermediateSize: 24 },
  },
]

describe.each(CASES)('decoder export: $name', ({ config: input }) => {
  let c: LlamaConfig
  let w: Weights
  let fp32: InferenceSession
  let fp16: InferenceSession

  beforeAll(async () => {
    c = parseConfig(input)
    // std 0.3 gives logits of order 1, so a wrong op shows up far above the tolerance.
    w = randomWeights(c, { seed: c.hiddenSize, std: 0.3 })
    fp32 = await createSession(exportOnnx(w, c))
    fp16 = await createSession(exportOnnx(w, c, { dtype: 'fp16' }))
  })

  it.each([1, 5, 17])('fp32 logits match the TypeScript reference within 1e-4 (seq %i)', async (n) => {
    const ids = tokens(n, c.vocabSize, n)
    const { logits } = await step(fp32, full(ids), emptyCache(c, 1, 'float32'))
    const ref = referenceForward(w, c, ids)
    expect(maxAbsDiff(logits, ref)).toBeLessThan(1e-4)
    expect(Math.max(...ref.map(Math.abs))).toBeGreaterThan(0.5) // the comparison is not vacuous
  })

  it('uses position_ids for RoPE (uneven positions match the reference)', async () => {
    const ids = tokens(4, c.vocabSize, 6)
    const positions = [2, 5, 6, 11] // uneven gaps: a uniform shift would not change RoPE attention
    const { logits } = await step(
      fp32,
      { ids: [ids], mask: [ids.map(() => 1)], positions: [positions] },
      emptyCache(c, 1, 'float32'),
    )
    const ref = referenceForward(w, c, ids, { positionIds: positions })
    expect(maxAbsDiff(logits, ref)).toBeLessThan(1e-4)
    expect(maxAbsDiff(ref, referenceForward(w, c, ids))).toBeGreaterThan(1e-2) // positions matter
  })

  it('without the projection fusion (the graph training differentiates) it matches too', async () => {
    const plain = await createSession(exportOnnx(w, c, { fuseProjections: false }))
    const ids = tokens(7, c.vocabSize, 1)
    const { logits } = await step(plain, full(ids), emptyCache(c, 1, 'float32'))
    expect(maxAbsDiff(logits, referenceForward(w, c, ids))).toBeLessThan(1e-4)
  })

  it('fp16 variant runs and stays close to the reference', async () => {
    const ids = tokens(9, c.vocabSize, 2)
    const { logits } = await step(fp16, full(ids), emptyCache(c, 1, 'float16'))
    const ref = referenceForward(w, c, ids)
    expect(maxAbsDiff(logits, ref)).toBeLessThan(0.05)
  })

  it('decoding token by token through the KV cache equals one full pass', async () => {
    const ids = tokens(8, c.vocabSize, 3)
    const V = c.vocabSize
    const whole = await step(fp32, full(ids), emptyCache(c, 1, 'float32'))
    // A 3-token prefill, then one token at a time.
    let r = await step(fp32, full(ids.slice(0, 3)), emptyCache(c, 1, 'float32'))
    expect(maxAbsDiff(r.logits, whole.logits.subarray(0, 3 * V))).toBeLessThan(1e-5)
    let cache: KvCache = r.cache
    for (let t = 3; t < ids.length; t++) {
      r = await step(fp32, { ids: [[ids[t]]], mask: [Array(t + 1).fill(1)], positions: [[t]] }, cache)
      expect(maxAbsDiff(r.logits, whole.logits.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-5)
      cache = r.cache
    }
    expect(cache.get('past_key_values.0.key')!.dims).toEqual([
      1,
      c.numKvHeads,
      ids.length,
      c.hiddenSize / c.numHeads,
    ])
  })

  it('a left-padded batch of two gives each row the logits it gets alone, also while decoding', async () => {
    const V = c.vocabSize
    const long = tokens(6, V, 4)
    const short = tokens(3, V, 5)
    const pad = long.length - short.length
    const batch = {
      ids: [long, [...Array(pad).fill(0), ...short]],
      mask: [long.map(() => 1), [...Array(pad).fill(0), ...short.map(() => 1)]],
      // Positions as transformers.js makes them: cumsum(mask) - 1, padding set to 1.
      positions: [long.map((_, i) => i), [...Array(pad).fill(1), ...short.map((_, i) => i)]],
    }
    const b = await step(fp32, batch, emptyCache(c, 2, 'float32'))
    const aloneLong = await step(fp32, full(long), emptyCache(c, 1, 'float32'))
    const aloneShort = await step(fp32, full(short), emptyCache(c, 1, 'float32'))
    const S = long.length
    expect(maxAbsDiff(b.logits.subarray(0, S * V), aloneLong.logits)).toBeLessThan(1e-5)
    expect(maxAbsDiff(b.logits.subarray((S + pad) * V, 2 * S * V), aloneShort.logits)).toBeLessThan(1e-5)

    // One more token per row through the batched cache.
    const next = [7 % V, 11 % V]
    const b2 = await step(
      fp32,
      {
        ids: [[next[0]], [next[1]]],
        mask: [Array(S + 1).fill(1), [...batch.mask[1], 1]],
        positions: [[S], [short.length]],
      },
      b.cache,
    )
    const longNext = await step(fp32, full([...long, next[0]]), emptyCache(c, 1, 'float32'))
    const shortNext = await step(fp32, full([...short, next[1]]), emptyCache(c, 1, 'float32'))
    expect(maxAbsDiff(b2.logits.subarray(0, V), longNext.logits.subarray(S * V))).toBeLessThan(1e-5)
    expect(
      maxAbsDiff(b2.logits.subarray(V, 2 * V), shortNext.logits.subarray(short.length * V)),
    ).toBeLessThan(1e-5)
  })

  it('has the Optimum decoder-with-past inputs and outputs', () => {
    const names = (kind: string) =>
      Array.from({ length: c.numLayers }, (_, i) => [`${kind}.${i}.key`, `${kind}.${i}.value`]).flat()
    expect(fp32.inputNames).toEqual([
      'input_ids',
      'attention_mask',
      'position_ids',
      ...names('past_key_values'),
    ])
    expect(fp32.outputNames).toEqual(['logits', ...names('present')])
    expect(fp16.inputNames).toEqual(fp32.inputNames)
    expect(fp16.outputNames).toEqual(fp32.outputNames)
  })
})

describe('decoder export: declared shapes and dtypes', () => {
  const c = parseConfig({
    vocabSize: 40,
    hiddenSize: 32,
    numLayers: 1,
    numHeads: 4,
    numKvHeads: 2,
    intermediateSize: 16,
  })
  const w = randomWeights(c)

  it.each([
    ['fp32', 'float32'],
    ['fp16', 'float16'],
  ] as const)(
    '%s: symbolic dims as Optimum names them, KV [batch, kv_heads, seq, head_dim]',
    (dtype, elem) => {
      const s = describeOnnx(exportOnnx(w, c, { dtype }))
      expect(s.opset).toBeGreaterThanOrEqual(17)
      expect(s.inputs).toEqual([
        { name: 'input_ids', dtype: 'int64', shape: ['batch_size', 'sequence_length'] },
        {
          name: 'attention_mask',
          dtype: 'int64',
          shape: ['batch_size', 'past_sequence_length + sequence_length'],
        },
        { name: 'position_ids', dtype: 'int64', shape: ['batch_size', 'sequence_length'] },
        { name: 'past_key_values.0.key', dtype: elem, shape: ['batch_size', 2, 'past_sequence_length', 8] },
        { name: 'past_key_values.0.value', dtype: elem, shape: ['batch_size', 2, 'past_sequence_length', 8] },
      ])
      const total = 'past_sequence_length + sequence_length'
      expect(s.outputs).toEqual([
        { name: 'logits', dtype: elem, shape: ['batch_size', 'sequence_length', 40] },
        { name: 'present.0.key', dtype: elem, shape: ['batch_size', 2, total, 8] },
        { name: 'present.0.value', dtype: elem, shape: ['batch_size', 2, total, 8] },
      ])
    },
  )

  it('stores each weight once as an initializer and uses standard ops only', () => {
    const s = describeOnnx(exportOnnx(w, c))
    // 9 per layer + embedding + final norm (tied head) + inv_freq, plus small shape constants.
    const bytes = exportOnnx(w, c).byteLength
    const params = [...w.values()].reduce((n, t) => n + t.data.length, 0)
    expect(bytes).toBeGreaterThan(params * 4)
    expect(bytes).toBeLessThan(params * 4 + 20_000)
    expect(Object.keys(s.ops).sort()).toEqual(
      expect.arrayContaining(['Gather', 'MatMul', 'Softmax', 'Where', 'Gemm', 'Cos', 'Sin', 'ReduceMean']),
    )
    expect(s.ops.Cast ?? 0).toBeLessThanOrEqual(4) // fp32: only position/mask casts
  })
})
