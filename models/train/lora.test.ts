/**
 * LoRA: training adapters on a small domain set lowers the domain validation
 * loss, the base model's files and tensors stay byte-identical, and merging
 * the adapters into the base gives a model with the adapted loss.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { randomWeights } from '../llama/weights.js'
import { pack, splitDataset, tokenizeRecord } from './data.js'
import { evaluateWeights } from './eval.js'
import { writeTrainedModel } from './export.js'
import { capitalsJsonl, miniTokenizer, tinyConfig } from './fixtures.js'
import { adapterNames, initLora, loadAdapter, loraShapes, mergeLora, trainLora } from './lora.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})
const sha = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex')

describe('LoRA', () => {
  it('lowers domain validation loss, keeps the base byte-identical, and merges', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-lora-'))
    dirs.push(dir)
    const { tok, files } = await miniTokenizer()
    const c = tinyConfig(tok)
    const base = randomWeights(c, { seed: 11, std: 0.3 })
    const baseDir = join(dir, 'base')
    await writeTrainedModel(baseDir, { config: c, weights: base, tokenizer: files, card: '# base\n' })
    const before = await sha(join(baseDir, 'model.safetensors'))
    const copy = new Map([...base].map(([n, t]) => [n, Float32Array.from(t.data)]))
    await writeFile(join(dir, 'capitals.jsonl'), capitalsJsonl(160, 5))

    const r = await trainLora({
      baseDir,
      data: { paths: [join(dir, 'capitals.jsonl')], valFraction: 0.15 },
      hyperparameters: {
        batchSize: 8,
        seqLen: 32,
        steps: 50,
        lr: 2e-2,
        warmupSteps: 5,
        seed: 2,
        rank: 4,
        alpha: 8,
        targetModules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'],
      },
      adapterDir: join(dir, 'adapter'),
      session: { threads: 1 },
    })
    expect(r.baseValLoss).not.toBeNull()
    expect(r.valLoss!).toBeLessThan(r.baseValLoss! - 1)
    // Only adapters were trained: exactly the targeted modules, rank 4.
    expect([...r.adapters.keys()].sort()).toEqual([...loraShapes(c, base, r.lora).keys()].sort())
    expect(r.adapters.get(adapterNames('model.layers.0.self_attn.q_proj.weight').a)!.shape).toEqual([4, 32])
    // The base is untouched, on disk and in memory.
    expect(await sha(join(baseDir, 'model.safetensors'))).toBe(before)
    for (const [n, t] of base) expect(t.data).toEqual(copy.get(n))

    // Saved in PEFT layout and merged: the merged full model has the adapted loss.
    const saved = await loadAdapter(join(dir, 'adapter'))
    expect(saved.lora).toEqual(r.lora)
    const merged = mergeLora(c, base, saved.adapters, saved.lora)
    const docs = capitalsJsonl(160, 5)
      .split('\n')
      .map((l) => tokenizeRecord(tok, JSON.parse(l)))
    const data = splitDataset(pack(docs, tok.eosTokenId), 32, 0.15, 2)
    const mergedLoss = await evaluateWeights(c, merged, data, 8, { threads: 1 })
    expect(mergedLoss.loss).toBeCloseTo(r.valLoss!, 3)
    const baseLoss = await evaluateWeights(c, base, data, 8, { threads: 1 })
    expect(baseLoss.loss).toBeCloseTo(r.baseValLoss!, 4)
  })

  it('starts from the base model exactly (B = 0) and rejects unknown modules', () => {
    const c = { ...tinyConfigStub }
    const base = randomWeights(c)
    const lora = { rank: 2, alpha: 4, targetModules: ['o_proj' as const] }
    const init = initLora(c, base, lora, 1)
    const merged = mergeLora(c, base, init, lora)
    for (const [n, t] of base) expect(merged.get(n)!.data).toEqual(t.data)
    expect(() => loraShapes(c, base, { ...lora, targetModules: ['qkv' as never] })).toThrow(
      /unknown target module 'qkv'/,
    )
  })
})

const tinyConfigStub = {
  vocabSize: 10,
  hiddenSize: 8,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  intermediateSize: 12,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 16,
  tieEmbeddings: true,
  bosTokenId: 0,
  eosTokenId: 0,
  padTokenId: 0,
}
