import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { type LlamaConfigInput, parseConfig } from '../config.js'
import { readModelFolder } from '../folder.js'
import { describeOnnx } from '../graph/onnx.js'
import { createSession, emptyCache, type KvCache, step } from '../ort-decode.js'
import { exportOnnx } from './export.js'
import { referenceForward } from './reference.js'
import { exportServingOnnx, SERVING_OPSET, weightsFromExport } from './serving.js'
import { randomWeights } from './weights.js'

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

const tokens = (n: number, vocab: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (i * 7 + seed * 13 + 1) % vocab)
const full = (ids: number[]) => ({ ids: [ids], mask: [ids.map(() => 1)], positions: [ids.map((_, i) => i)] })
const lastRow = (logits: Float32Array, V: number, rows: number, row: number) =>
  logits.subarray((row * rows + rows - 1) * V, (row * rows + rows) * V)

const CASES: { name: string; config: LlamaConfigInput }[] = [
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
      maxPositions: 64,
    },
  },
  {
    name: 'multi-head, tied, head dim 6',
    config: { vocabSize: 50, hiddenSize: 36, numLayers: 3, numHeads: 6, numKvHeads: 6, intermediateSize: 24 },
  },
]

describe.each(CASES)('serving graph: $name', ({ config }) => {
  const c = parseConfig(config)
  const w = randomWeights(c, { seed: 7, std: 0.3 })

  it('reads the weights back from our export, fused or not, fp32 or fp16', () => {
    for (const bytes of [exportOnnx(w, c), exportOnnx(w, c, { fuseProjections: false })]) {
      const back = weightsFromExport(bytes, c)!
      expect([...back.keys()].sort()).toEqual([...w.keys()].sort())
      for (const [name, t] of w) {
        expect(back.get(name)!.shape).toEqual(t.shape)
        expect(maxAbsDiff(back.get(name)!.data, t.data)).toBe(0)
      }
    }
    const half = weightsFromExport(exportOnnx(w, c, { dtype: 'fp16' }), c)!
    expect(
      maxAbsDiff(half.get('model.embed_tokens.weight')!.data, w.get('model.embed_tokens.weight')!.data),
    ).toBeLessThan(5e-3)
  })

  it('is an opset 23 graph with a third of the export nodes', () => {
    const serving = describeOnnx(exportServingOnnx(w, c))
    const exported = describeOnnx(exportOnnx(w, c))
    expect(serving.opset).toBe(SERVING_OPSET)
    expect(serving.ops.Attention).toBe(c.numLayers)
    expect(serving.nodes).toBeLessThan(exported.nodes / 2)
    expect(serving.inputs.map((i) => i.name)).toEqual(exported.inputs.map((i) => i.name))
    expect(serving.outputs.map((o) => o.name).sort()).toEqual(exported.outputs.map((o) => o.name).sort())
  })

  it('gives the export’s last-position logits and cache: prefill, decode and a left-padded batch', async () => {
    const serving = await createSession(exportServingOnnx(w, c))
    const exported = await createSession(exportOnnx(w, c))
    const V = c.vocabSize
    const ids = tokens(9, V, 3)
    // Prefill, then token by token: logits [B,1,V] equal the export's last row and the reference.
    let a = await step(serving, full(ids.slice(0, 4)), emptyCache(c, 1, 'float32'))
    let b = await step(exported, full(ids.slice(0, 4)), emptyCache(c, 1, 'float32'))
    expect(maxAbsDiff(a.logits, lastRow(b.logits, V, 4, 0))).toBeLessThan(1e-4)
    let ca: KvCache = a.cache
    let cb: KvCache = b.cache
    for (let t = 4; t < ids.length; t++) {
      const input = { ids: [[ids[t]]], mask: [Array(t + 1).fill(1)], positions: [[t]] }
      a = await step(serving, input, ca)
      b = await step(exported, input, cb)
      expect(maxAbsDiff(a.logits, b.logits)).toBeLessThan(1e-4)
      const ref = referenceForward(w, c, ids.slice(0, t + 1))
      expect(maxAbsDiff(a.logits, ref.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-4)
      for (const [name, kv] of a.cache)
        expect(maxAbsDiff(kv.data as Float32Array, b.cache.get(name)!.data as Float32Array)).toBeLessThan(
          1e-4,
        )
      ca = a.cache
      cb = b.cache
    }
    // Left padding: each row equals itself alone (padded keys and queries change nothing).
    const long = tokens(6, V, 4)
    const short = tokens(2, V, 5)
    const pad = long.length - short.length
    const batch = await step(
      serving,
      {
        ids: [long, [...Array(pad).fill(0), ...short]],
        mask: [long.map(() => 1), [...Array(pad).fill(0), ...short.map(() => 1)]],
        positions: [long.map((_, i) => i), [...Array(pad).fill(1), ...short.map((_, i) => i)]],
      },
      emptyCache(c, 2, 'float32'),
    )
    const aloneLong = await step(serving, full(long), emptyCache(c, 1, 'float32'))
    const aloneShort = await step(serving, full(short), emptyCache(c, 1, 'float32'))
    expect(maxAbsDiff(batch.logits.subarray(0, V), aloneLong.logits)).toBeLessThan(1e-5)
    expect(maxAbsDiff(batch.logits.subarray(V, 2 * V), aloneShort.logits)).toBeLessThan(1e-5)
    expect(batch.logits.every(Number.isFinite)).toBe(true)
  })

  it('is not built from graphs other tools wrote', () => {
    const foreign = exportOnnx(w, c)
    // Same bytes, another producer name: not ours.
    const renamed = Buffer.from(foreign)
    renamed.write('prometheus-gpX', Buffer.from(foreign).indexOf('prometheus-gpt'), 'latin1')
    expect(weightsFromExport(renamed, c)).toBeNull()
  })
})

describe('the bundled prometheus-mini', () => {
  it('ships one model: its ONNX export holds exactly the weights of its safetensors', async () => {
    const dir = new URL('../prometheus-mini/', import.meta.url).pathname
    const m = await readModelFolder(dir)
    const fromGraph = weightsFromExport(await readFile(`${dir}onnx/model.onnx`), m.config)!
    expect(fromGraph).not.toBeNull()
    for (const [name, t] of m.weights) expect(maxAbsDiff(fromGraph.get(name)!.data, t.data)).toBe(0)
  })
})
