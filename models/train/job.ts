/**
 * A whole training job as one call, what `pgpt train` runs: read a model
 * folder, tokenize and pack the data files, train (full or LoRA) with a
 * progress bar, checkpoints and metrics, draw the loss curve, and export the
 * trained model as a complete folder (LoRA: the adapter and the merged model).
 *
 *   <outDir>/metrics.jsonl, loss.png, checkpoint/, model/, adapter/ (LoRA)
 */
import { join } from 'node:path'
import { readModelFolder } from '../folder.js'
import { parameterCount } from '../llama/weights.js'
import { createTokenizer } from '../tokenizer/tokenizer.js'
import { unigramEntropy } from './data.js'
import { writeTrainedModel } from './export.js'
import { readMetrics } from './loop.js'
import { type LoraConfig, mergeLora, trainLora } from './lora.js'
import { writeLossCurve } from './plot.js'
import { progressBar } from './progress.js'
import type { SessionOptions } from './session.js'
import { type Hyperparameters, prepareDataset, train } from './train.js'

export interface TrainJobOptions {
  /** Model folder to start from (`pgpt model init` makes a random one for pretraining). */
  modelDir: string
  /** Text (.txt, .md) and JSONL files. */
  data: string[]
  outDir: string
  hyperparameters: Hyperparameters
  /** Share of windows held out for validation; default 0.1. */
  valFraction?: number
  /** Train LoRA adapters instead of all weights. */
  lora?: LoraConfig
  resume?: boolean
  /** Default 100. */
  checkpointEvery?: number
  /** Draw a progress bar on stderr; default true. */
  progress?: boolean
  log?: (line: string) => void
  session?: SessionOptions
  signal?: AbortSignal
}

export interface TrainJobResult {
  steps: number
  valLoss: number | null
  /** LoRA: the base model's validation loss before training. */
  baseValLoss: number | null
  unigramEntropy: number
  modelDir: string
  adapterDir?: string
}

export async function runTrainJob(o: TrainJobOptions): Promise<TrainJobResult> {
  const log = o.log ?? ((l: string) => console.error(l))
  const h = o.hyperparameters
  const base = await readModelFolder(o.modelDir)
  if (!base.tokenizer) throw new Error(`train: ${o.modelDir} has no tokenizer.json`)
  const tok = createTokenizer(base.tokenizer)
  const data = await prepareDataset({
    paths: o.data,
    tokenizer: tok,
    seqLen: h.seqLen,
    valFraction: o.valFraction,
    seed: h.seed,
  })
  const entropy = unigramEntropy(data.packed.tokens)
  log(
    `data: ${data.packed.tokens.length} tokens, ${data.trainWindows.length} train / ${data.valWindows.length} val windows of ${h.seqLen}, unigram entropy ${entropy.toFixed(3)} nats`,
  )
  log(
    `model: ${parameterCount(base.config).toLocaleString('en-US')} parameters${o.lora ? `, LoRA rank ${o.lora.rank} on ${o.lora.targetModules.join(',')}` : ''}`,
  )
  const bar = o.progress === false ? null : progressBar(h.steps)
  const hooks = {
    checkpointDir: join(o.outDir, 'checkpoint'),
    checkpointEvery: o.checkpointEvery ?? 100,
    resume: o.resume,
    metricsPath: join(o.outDir, 'metrics.jsonl'),
    onStep: bar?.onStep,
    onEval: bar?.onEval,
    signal: o.signal,
    session: o.session,
  }
  const modelDir = join(o.outDir, 'model')
  let result: TrainJobResult
  let weights = base.weights
  try {
    if (o.lora) {
      const adapterDir = join(o.outDir, 'adapter')
      const r = await trainLora({
        baseDir: o.modelDir,
        data,
        hyperparameters: { ...h, ...o.lora },
        adapterDir,
        ...hooks,
      })
      weights = mergeLora(base.config, base.weights, r.adapters, r.lora)
      result = {
        steps: r.steps,
        valLoss: r.valLoss,
        baseValLoss: r.baseValLoss,
        unigramEntropy: entropy,
        modelDir,
        adapterDir,
      }
    } else {
      const r = await train({
        config: base.config,
        weights: base.weights,
        data,
        hyperparameters: h,
        ...hooks,
      })
      weights = r.weights
      result = { steps: r.steps, valLoss: r.valLoss, baseValLoss: null, unigramEntropy: entropy, modelDir }
    }
  } finally {
    bar?.stop()
  }
  await writeLossCurve(join(o.outDir, 'loss.png'), await readMetrics(hooks.metricsPath))
  await writeTrainedModel(modelDir, {
    config: base.config,
    weights,
    tokenizer: base.tokenizer,
    card: jobCard(o, result),
  })
  return result
}

function jobCard(o: TrainJobOptions, r: TrainJobResult): string {
  const h = o.hyperparameters
  return `# ${o.lora ? 'LoRA fine-tune (merged)' : 'Trained model'} of ${o.modelDir}

Trained with \`pgpt train\` (PrometheusGPT ONNX train-step graph, onnxruntime).

| field | value |
|---|---|
| data | ${o.data.join(', ')} |
| steps × batch × sequence | ${r.steps} × ${h.batchSize} × ${h.seqLen} |
| learning rate | ${h.lr} (warmup + cosine) |
| seed | ${h.seed} |
${o.lora ? `| LoRA | rank ${o.lora.rank}, alpha ${o.lora.alpha}, ${o.lora.targetModules.join(', ')} (merged into the base) |\n| validation loss before | ${r.baseValLoss?.toFixed(4)} |\n` : ''}| validation loss | ${r.valLoss?.toFixed(4) ?? 'n/a'} (perplexity ${r.valLoss === null ? 'n/a' : Math.exp(r.valLoss).toFixed(2)}) |
| unigram entropy of the data | ${r.unigramEntropy.toFixed(4)} |
`
}
