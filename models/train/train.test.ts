/**
 * End-to-end training on tiny configs: a short run beats the unigram entropy
 * of its data on held-out windows, and a resumed run reproduces the
 * uninterrupted one step for step.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { pack, splitDataset, unigramEntropy } from './data.js'
import { evaluateWeights } from './eval.js'
import { miniTokenizer, templateCorpus, tinyConfig } from './fixtures.js'
import { readMetrics } from './loop.js'
import { type Hyperparameters, train } from './train.js'

const dirs: string[] = []
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), 'pgpt-train-'))
  dirs.push(d)
  return d
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('train', () => {
  it('a short run drives validation loss well below the unigram entropy of the data', async () => {
    const { tok } = await miniTokenizer()
    const c = tinyConfig(tok)
    const docs = templateCorpus(300, 1).map((t) => ({ ids: tok.encode(t) }))
    const data = splitDataset(pack(docs, tok.eosTokenId), 32, 0.1, 1)
    const entropy = unigramEntropy(data.packed.tokens)
    const h: Hyperparameters = { batchSize: 8, seqLen: 32, steps: 120, lr: 1e-2, warmupSteps: 10, seed: 1 }
    const dir = await tempDir()
    const r = await train({
      config: c,
      data,
      hyperparameters: h,
      metricsPath: join(dir, 'metrics.jsonl'),
      session: { threads: 1 },
    })
    expect(entropy).toBeGreaterThan(3)
    expect(r.valLoss).not.toBeNull()
    expect(r.valLoss!).toBeLessThan(entropy - 1.5)
    // The returned weights are the trained ones: evaluated separately they give the same loss.
    const again = await evaluateWeights(c, r.weights, data, 8, { threads: 1 })
    expect(again.loss).toBeCloseTo(r.valLoss!, 4)
    const metrics = await readMetrics(join(dir, 'metrics.jsonl'))
    expect(metrics.filter((m) => m.type === 'train')).toHaveLength(120)
    expect(metrics.at(-1)).toMatchObject({ type: 'eval', step: 120 })
  })

  it('resuming from a checkpoint reproduces the uninterrupted loss curve', async () => {
    const { tok } = await miniTokenizer()
    const c = tinyConfig(tok)
    const docs = templateCorpus(80, 2).map((t) => ({ ids: tok.encode(t) }))
    const data = splitDataset(pack(docs, tok.eosTokenId), 16, 0.1, 2)
    const h: Hyperparameters = { batchSize: 4, seqLen: 16, steps: 8, lr: 5e-3, warmupSteps: 2, seed: 3 }
    const straight = await train({ config: c, data, hyperparameters: h, session: { threads: 1 } })

    const dir = await tempDir()
    const ck = join(dir, 'checkpoint')
    const stop = new AbortController()
    const first = await train({
      config: c,
      data,
      hyperparameters: h,
      checkpointDir: ck,
      metricsPath: join(dir, 'metrics.jsonl'),
      onStep: (s) => s.step === 3 && stop.abort(),
      signal: stop.signal,
      session: { threads: 1 },
    })
    expect(first.aborted).toBe(true)
    expect(first.steps).toBe(3)
    expect(JSON.parse(await readFile(join(ck, 'trainer_state.json'), 'utf8')).step).toBe(3)
    const rest = await train({
      config: c,
      data,
      hyperparameters: h,
      checkpointDir: ck,
      resume: true,
      metricsPath: join(dir, 'metrics.jsonl'),
      session: { threads: 1 },
    })
    expect(rest.resumedFrom).toBe(3)
    const resumed = [...first.history, ...rest.history].map((s) => [s.step, s.loss, s.lr])
    expect(resumed).toEqual(straight.history.map((s) => [s.step, s.loss, s.lr]))
    for (const [name, t] of straight.weights) expect(rest.weights.get(name)!.data).toEqual(t.data)
    const logged = (await readMetrics(join(dir, 'metrics.jsonl'))).filter((m) => m.type === 'train')
    expect(logged.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    // A checkpoint of another model shape is refused, naming the tensor.
    const wider = tinyConfig(tok, { hiddenSize: 16 })
    await expect(
      train({
        config: wider,
        data,
        hyperparameters: h,
        checkpointDir: ck,
        resume: true,
        session: { threads: 1 },
      }),
    ).rejects.toThrow(/checkpoint .* has 'model.embed_tokens.weight' as \[\d+,32\]/)
  })
})
