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
import { EMBED, randomWeights } from '../llama/weights.js'
import { pack, splitDataset, tokenizeRecord } from './data.js'
import { evaluateWeights } from './eval.js'
import { writeTrainedModel } from './export.js'
import { capitalsJsonl, miniTokenizer, tinyConfig } from './fixtures.js'
import {
  ADAPTER_FILES,
  adapterNames,
  initLora,
  loadAdapter,
  loraShapes,
  mergeLora,
  TOKENS_DELTA,
  trainLora,
} from './lora.js'

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

  it('trains the embedding rows of trainable tokens too (PEFT trainable_token_indices); the merge has the trained loss', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-lora-tokens-'))
    dirs.push(dir)
    const { tok, files } = await miniTokenizer()
    const c = tinyConfig(tok)
    const base = randomWeights(c, { seed: 11, std: 0.3 })
    const baseDir = join(dir, 'base')
    await writeTrainedModel(baseDir, { config: c, weights: base, tokenizer: files, card: '# base\n' })
    const text = capitalsJsonl(80, 5)
    await writeFile(join(dir, 'capitals.jsonl'), text)
    const docs = text.split('\n').map((l) => tokenizeRecord(tok, JSON.parse(l)))
    const trainableTokens = [...new Set(docs.flatMap((d) => d.ids))].sort((a, b) => a - b)
    const r = await trainLora({
      baseDir,
      data: { paths: [join(dir, 'capitals.jsonl')], valFraction: 0.15 },
      hyperparameters: {
        batchSize: 8,
        seqLen: 32,
        steps: 20,
        lr: 2e-2,
        warmupSteps: 2,
        seed: 2,
        rank: 4,
        alpha: 8,
        targetModules: ['q_proj', 'v_proj'],
        trainableTokens,
      },
      adapterDir: join(dir, 'adapter'),
      session: { threads: 1 },
    })
    expect(r.valLoss!).toBeLessThan(r.baseValLoss!)
    const delta = r.adapters.get(TOKENS_DELTA)!
    expect(delta.shape).toEqual([trainableTokens.length, c.hiddenSize])
    expect(delta.data.some((x) => x !== 0)).toBe(true)
    // PEFT's layout: the ids in adapter_config.json, the deltas in their order.
    const config = JSON.parse(await readFile(join(dir, 'adapter', ADAPTER_FILES.config), 'utf8'))
    expect(config.trainable_token_indices).toEqual(trainableTokens)
    const saved = await loadAdapter(join(dir, 'adapter'))
    expect(saved.lora).toEqual(r.lora)
    // The merge moves exactly those embedding rows (the tied LM head with them) …
    const merged = mergeLora(c, base, saved.adapters, saved.lora)
    const E = base.get(EMBED)!.data
    const M = merged.get(EMBED)!.data
    const C = c.hiddenSize
    for (let v = 0; v < c.vocabSize; v++) {
      const row = (x: Float32Array) => x.subarray(v * C, (v + 1) * C)
      if (trainableTokens.includes(v)) continue
      expect(row(M)).toEqual(row(E))
    }
    expect(M).not.toEqual(E)
    // … and has the loss training measured: the train graph used the same embedding.
    const data = splitDataset(pack(docs, tok.eosTokenId), 32, 0.15, 2)
    expect((await evaluateWeights(c, merged, data, 8, { threads: 1 })).loss).toBeCloseTo(r.valLoss!, 3)
  })

  it('starts from the base model exactly (B = 0) and rejects unknown modules', () => {
    const c = { ...tinyConfigStub }
    const base = randomWeights(c)
    const lora = { rank: 2, alpha: 4, targetModules: ['o_proj' as const] }
    const init = initLora(c, base, lora, 1)
    const merged = mergeLora(c, base, init, lora)
    for (const [n, t] of base) expect(merged.get(n)!.data).toEqual(t.data)
    // Token deltas start at 0 too; ids must be ascending and in the vocabulary.
    const withTokens = { ...lora, trainableTokens: [1, 4] }
    const init2 = initLora(c, base, withTokens, 1)
    expect(init2.get(TOKENS_DELTA)!.data.every((x) => x === 0)).toBe(true)
    for (const [n, t] of base) expect(mergeLora(c, base, init2, withTokens).get(n)!.data).toEqual(t.data)
    expect(() => loraShapes(c, base, { ...lora, trainableTokens: [4, 1] })).toThrow(/ascending/)
    expect(() => loraShapes(c, base, { ...lora, trainableTokens: [10] })).toThrow(/outside the vocabulary/)
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
