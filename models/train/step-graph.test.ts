/**
 * The whole train-step graph: the Llama loss gradient against finite
 * differences, the eval loss against the TypeScript reference forward, and
 * one AdamW step against the same update written out in TypeScript.
 */
import { describe, expect, it } from 'vitest'
import { gradCheck } from '../autodiff/check.js'
import { parseConfig } from '../config.js'
import { buildDecoder } from '../llama/graph.js'
import { referenceForward } from '../llama/reference.js'
import { EMBED, randomWeights, weightShapes } from '../llama/weights.js'
import { crossEntropy, IGNORE_INDEX } from './loss.js'
import { freshState, TrainSession } from './session.js'
import { buildTrainGraphs, hfParams, intTensor, modelInputs } from './step-graph.js'

const c = parseConfig({
  vocabSize: 16,
  hiddenSize: 8,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  intermediateSize: 12,
})
const B = 2
const T = 5
const ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
const targets = [1, 4, 1, 5, IGNORE_INDEX, 2, 6, 5, 3, 5]

describe('Llama train-step graph', () => {
  it('loss gradient matches finite differences for every parameter tensor', async () => {
    const w = randomWeights(c, { seed: 3, std: 0.5 })
    const inputs = [...w].map(([name, t]) => ({ name, dims: t.shape, data: t.data, wrt: true }))
    const r = await gradCheck(
      inputs,
      (g, x) => {
        buildDecoder(g, hfParams(c)(g, new Map(Object.entries(x))), c, 'float32')
        const logits = g.outputs.find((v) => v.name === 'logits')!
        g.outputs.length = 0
        const t = g.input('targets', 'int64', [B, T])
        return crossEntropy(g, logits, t, c.vocabSize).loss
      },
      {
        maxElements: 12,
        feeds: {
          ...modelInputs(c, B, T),
          input_ids: intTensor(BigInt64Array.from(ids, BigInt), [B, T]),
          targets: intTensor(BigInt64Array.from(targets, BigInt), [B, T]),
        },
      },
    )
    expect(r.details.size).toBe(weightShapes(c).size)
    expect(r.worst).toBeLessThanOrEqual(1)
  })

  it('eval loss equals cross-entropy of the reference forward, ignoring ignored targets', async () => {
    const w = randomWeights(c, { seed: 4, std: 0.3 })
    const graphs = await buildTrainGraphs({
      config: c,
      batch: B,
      seqLen: T,
      trainable: weightShapes(c),
      params: hfParams(c),
      optimizer: { lr: 1e-3, totalSteps: 10 },
    })
    const s = await TrainSession.create(graphs, c, B, T, freshState(w), { threads: 1 })
    const batch = { inputs: BigInt64Array.from(ids, BigInt), targets: BigInt64Array.from(targets, BigInt) }
    const got = await s.evaluate([batch])
    let sum = 0
    let n = 0
    for (let b = 0; b < B; b++) {
      const logits = referenceForward(w, c, ids.slice(b * T, (b + 1) * T))
      for (let t = 0; t < T; t++) {
        const y = targets[b * T + t]
        if (y === IGNORE_INDEX) continue
        const row = logits.subarray(t * c.vocabSize, (t + 1) * c.vocabSize)
        const max = Math.max(...row)
        const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0))
        sum += lse - row[y]
        n++
      }
    }
    expect(got.tokens).toBe(9)
    expect(got.loss).toBeCloseTo(sum / n, 4)
    await s.release()
  })

  it('one step applies clipped AdamW with warmup as torch.optim.AdamW would (a tensor with lrScale k: k × lr)', async () => {
    const w = randomWeights(c, { seed: 5, std: 0.3 })
    const lr = 0.01
    const o = { lr, totalSteps: 10, warmupSteps: 4, weightDecay: 0.1, clipNorm: 0.05 }
    // A param group of its own learning rate, as LoRA's trainable-token rows get (models/train/lora.ts).
    const scaleOf = (name: string) => (name === EMBED ? 3 : 1)
    const spec = {
      config: c,
      batch: B,
      seqLen: T,
      trainable: weightShapes(c),
      params: hfParams(c),
      lrScale: scaleOf,
      optimizer: o,
    }
    const graphs = await buildTrainGraphs(spec)
    // After one step m = (1 − β₁)·ĝ and v = (1 − β₂)·ĝ² with ĝ the clipped gradient: recover ĝ from m.
    const s = await TrainSession.create(graphs, c, B, T, freshState(w), { threads: 1 })
    const batch = { inputs: BigInt64Array.from(ids, BigInt), targets: BigInt64Array.from(targets, BigInt) }
    const r = await s.run(batch)
    const after = s.state()
    expect(r.lr).toBeCloseTo(lr / 4, 7) // step 1 of 4 warmup steps
    expect(r.gradNorm).toBeGreaterThan(o.clipNorm) // clipping is active
    const scale = o.clipNorm / (r.gradNorm + 1e-6)
    let sumSq = 0
    for (const [name, t] of w) {
      const m = after.m.get(name)!.data
      const v = after.v.get(name)!.data
      const p = after.params.get(name)!.data
      const decay = t.shape.length >= 2
      const lrT = r.lr * scaleOf(name)
      for (let i = 0; i < t.data.length; i++) {
        const g = m[i] / 0.1 // m1 = (1 − β₁)·clipped g
        sumSq += (g / scale) ** 2
        expect(v[i]).toBeCloseTo(0.05 * g * g, 9)
        const mHat = m[i] / 0.1
        const vHat = v[i] / 0.05
        const expected = t.data[i] * (decay ? 1 - lrT * 0.1 : 1) - (lrT * mHat) / (Math.sqrt(vHat) + 1e-8)
        expect(p[i]).toBeCloseTo(expected, 5)
      }
    }
    expect(Math.sqrt(sumSq)).toBeCloseTo(r.gradNorm, 3)
    await s.release()
  })

  it('learning-rate schedule: linear warmup, cosine to minLr, flat after', async () => {
    const graphs = await buildTrainGraphs({
      config: c,
      batch: B,
      seqLen: T,
      trainable: weightShapes(c),
      params: hfParams(c),
      optimizer: { lr: 1, minLr: 0.1, warmupSteps: 2, totalSteps: 6 },
    })
    const s = await TrainSession.create(graphs, c, B, T, freshState(randomWeights(c)), { threads: 1 })
    const batch = { inputs: BigInt64Array.from(ids, BigInt), targets: BigInt64Array.from(targets, BigInt) }
    const lrs: number[] = []
    for (let i = 0; i < 8; i++) lrs.push((await s.run(batch)).lr)
    const cosine = (t: number) => 0.1 + 0.45 * (1 + Math.cos((Math.PI * (t - 2)) / 4))
    const expected = [0.5, 1, cosine(3), cosine(4), cosine(5), 0.1, 0.1, 0.1]
    for (const [i, x] of lrs.entries()) expect(x).toBeCloseTo(expected[i], 5)
    await s.release()
  })
})
