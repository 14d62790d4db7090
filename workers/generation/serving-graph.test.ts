/**
 * The decoder runs the engine's serving graph (models/llama/serving.ts) for
 * folders our exporter wrote, and the folder's own graph otherwise; both give
 * the same logits and cache.
 */
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { buildTestModel, type TestModel } from '../../test/helpers/tiny-models.js'
import { Decoder, type ForwardInput, type KvCache } from './decoder.js'

let model: TestModel
beforeAll(async () => {
  model = await buildTestModel({ kind: 'random', seed: 11 })
})

const prefill = (d: Decoder): ForwardInput => ({
  batch: 2,
  seq: 4,
  // Row 1 is left-padded by two positions.
  inputIds: BigInt64Array.of(5n, 6n, 7n, 8n, 0n, 0n, 9n, 10n),
  attentionMask: BigInt64Array.of(1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n),
  positionIds: BigInt64Array.of(0n, 1n, 2n, 3n, 1n, 1n, 0n, 1n),
  past: d.emptyCache(2),
})
const decode = (past: KvCache): ForwardInput => ({
  batch: 2,
  seq: 1,
  inputIds: BigInt64Array.of(11n, 12n),
  attentionMask: BigInt64Array.of(1n, 1n, 1n, 1n, 1n, 0n, 0n, 1n, 1n, 1n),
  positionIds: BigInt64Array.of(4n, 2n),
  past,
})

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

/** The entries of a [B,KV,S,D] cache at unmasked positions. */
const realPositions =
  (d: Decoder, mask: BigInt64Array, B: number, S: number) =>
  (kv: ArrayLike<number>): number[] => {
    const { numKvHeads: H, headDim: D } = d.info
    const out: number[] = []
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let s = 0; s < S; s++)
          if (mask[b * S + s] === 1n) for (let x = 0; x < D; x++) out.push(kv[((b * H + h) * S + s) * D + x])
    return out
  }

describe('serving graph in the decoder', () => {
  it('opens our folders with the serving graph and matches the folder graph step for step', async () => {
    const serving = await Decoder.open(model.folder)
    const folder = await Decoder.open(model.folder, { graph: 'folder' })
    expect([serving.graph, folder.graph]).toEqual(['serving', 'folder'])
    expect(serving.info.numLayers).toBe(folder.info.numLayers)
    const a1 = await serving.forward(prefill(serving))
    const b1 = await folder.forward(prefill(folder))
    expect(maxAbsDiff(a1.logits, b1.logits)).toBeLessThan(1e-4)
    const a2 = await serving.forward(decode(a1.present))
    const b2 = await folder.forward(decode(b1.present))
    expect(maxAbsDiff(a2.logits, b2.logits)).toBeLessThan(1e-4)
    // The cache agrees on every real position (what padded positions hold is never read).
    const real = realPositions(serving, decode(a1.present).attentionMask, 2, 5)
    for (let i = 0; i < serving.info.numLayers; i++) {
      expect(maxAbsDiff(real(a2.present.keys[i]), real(b2.present.keys[i]))).toBeLessThan(1e-4)
      expect(maxAbsDiff(real(a2.present.values[i]), real(b2.present.values[i]))).toBeLessThan(1e-4)
    }
    expect(Math.max(...a2.logits.map(Math.abs))).toBeGreaterThan(0.1) // not vacuous
    await Promise.all([serving.release(), folder.release()])
  })

  it('runs a graph another tool wrote as it is', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-foreign-'))
    await cp(model.folder, dir, { recursive: true })
    const path = join(dir, 'onnx', 'model.onnx')
    const bytes = Buffer.from(await readFile(path))
    bytes.write('someone-else!!', bytes.indexOf('prometheus-gpt'), 'latin1')
    await writeFile(path, bytes)
    const d = await Decoder.open(dir)
    expect(d.graph).toBe('folder')
    await d.release()
  })
})
