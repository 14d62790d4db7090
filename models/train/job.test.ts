/** `pgpt train`'s job end to end on a tiny model folder: outputs, export, resume. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { readModelFolder } from '../folder.js'
import { randomWeights } from '../llama/weights.js'
import { createSession, greedy } from '../ort-decode.js'
import { writeTrainedModel } from './export.js'
import { miniTokenizer, templateCorpus, tinyConfig } from './fixtures.js'
import { runTrainJob } from './job.js'
import { readMetrics } from './loop.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('runTrainJob', () => {
  it('writes metrics, loss curve, checkpoint and a loadable model folder, and resumes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-job-'))
    dirs.push(dir)
    const { tok, files } = await miniTokenizer()
    const c = tinyConfig(tok)
    await writeTrainedModel(join(dir, 'base'), {
      config: c,
      weights: randomWeights(c),
      tokenizer: files,
      card: '#\n',
    })
    await writeFile(join(dir, 'a.txt'), templateCorpus(40, 1).join('\n'))
    await writeFile(
      join(dir, 'b.jsonl'),
      templateCorpus(20, 2)
        .map((text) => JSON.stringify({ text }))
        .join('\n'),
    )
    const opts = {
      modelDir: join(dir, 'base'),
      data: [join(dir, 'a.txt'), join(dir, 'b.jsonl')],
      outDir: join(dir, 'run'),
      hyperparameters: { batchSize: 4, seqLen: 16, steps: 4, lr: 5e-3, seed: 1, evalBatches: 2 },
      progress: false,
      log: () => {},
      session: { threads: 1 },
    }
    const r = await runTrainJob(opts)
    expect(r.steps).toBe(4)
    expect(r.valLoss).toBeLessThan(Math.log(c.vocabSize))
    const png = await readFile(join(dir, 'run', 'loss.png'))
    expect([...png.subarray(1, 4)]).toEqual([0x50, 0x4e, 0x47]) // "PNG"
    const model = await readModelFolder(join(dir, 'run', 'model'))
    expect(model.config).toEqual(c)
    expect(model.tokenizer).toBeDefined()
    const session = await createSession(await readFile(join(dir, 'run', 'model', 'onnx', 'model.onnx')))
    expect(await greedy(session, c, tok.encode('The red'), 3)).toHaveLength(3)
    await session.release()

    const more = await runTrainJob({
      ...opts,
      hyperparameters: { ...opts.hyperparameters, steps: 6 },
      resume: true,
    })
    expect(more.steps).toBe(6)
    const steps = (await readMetrics(join(dir, 'run', 'metrics.jsonl')))
      .filter((m) => m.type === 'train')
      .map((m) => m.step)
    expect(steps).toEqual([1, 2, 3, 4, 5, 6])
  })
})
