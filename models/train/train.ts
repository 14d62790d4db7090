/**
 * Full-model training (pretraining or full fine-tuning) as a function:
 * build the train-step graph, start or resume the optimizer state, run the
 * loop, return the weights. `pgpt train` and models/scripts/pretrain-mini.ts
 * call this; LoRA lives in lora.ts on the same pieces.
 */
import type { LlamaConfig } from '../config.js'
import { randomWeights, weightShapes } from '../llama/weights.js'
import type { Weights } from '../safetensors.js'
import type { PrometheusTokenizer } from '../tokenizer/tokenizer.js'
import { loadCheckpoint } from './checkpoint.js'
import { type Dataset, type Doc, pack, readDocs, splitDataset } from './data.js'
import { type EvalReport, type LoopResult, type StepReport, trainLoop } from './loop.js'
import { freshState, type OptimState, type SessionOptions, TrainSession } from './session.js'
import { buildTrainGraphs, hfParams } from './step-graph.js'

export interface Hyperparameters {
  batchSize: number
  /** Tokens per training sequence. */
  seqLen: number
  /** Optimizer steps in total (the schedule's length). */
  steps: number
  /** Peak learning rate. */
  lr: number
  /** Final learning rate of the cosine; default lr / 10. */
  minLr?: number
  /** Default: 5% of steps. */
  warmupSteps?: number
  /** Default 0.1 (0 for LoRA). */
  weightDecay?: number
  /** Global gradient-norm clip; default 1. */
  clipNorm?: number
  beta1?: number
  beta2?: number
  seed: number
  /** Evaluate every N steps (and at the end); default 0 = end only. */
  evalEvery?: number
  /** Validation batches per evaluation; default all. */
  evalBatches?: number
}

export interface TrainHooks {
  /** A checkpoint is written here every `checkpointEvery` steps, at the end, and on abort. */
  checkpointDir?: string
  checkpointEvery?: number
  /** Continue from the checkpoint in checkpointDir when there is one. */
  resume?: boolean
  /** JSONL file of step and eval metrics. */
  metricsPath?: string
  onStep?: (r: StepReport) => void
  onEval?: (r: EvalReport) => void
  /** Stops after the current step, saving a checkpoint. */
  signal?: AbortSignal
  session?: SessionOptions
}

export interface TrainOptions extends TrainHooks {
  config: LlamaConfig
  /** Starting weights; default random (seeded). */
  weights?: Weights
  data: Dataset
  hyperparameters: Hyperparameters
}

export interface TrainResult extends LoopResult {
  weights: Weights
  /** Last validation loss (nats/token), or null without validation data. */
  valLoss: number | null
  /** Step the run started from (> 0 when resumed). */
  resumedFrom: number
}

export interface DataOptions {
  /** Text (.txt, .md) or JSONL files. */
  paths?: string[]
  /** In-memory documents (plain text or JSONL-style records already parsed to text). */
  texts?: string[]
  tokenizer: PrometheusTokenizer
  seqLen: number
  /** Share of windows held out for validation; default 0.1. */
  valFraction?: number
  seed: number
}

/** Tokenize, pack and split. */
export async function prepareDataset(o: DataOptions): Promise<Dataset> {
  const docs: Doc[] = [
    ...(o.paths ? await readDocs(o.paths, o.tokenizer) : []),
    ...(o.texts ?? []).map((t) => ({ ids: o.tokenizer.encode(t) })),
  ]
  return splitDataset(pack(docs, o.tokenizer.eosTokenId), o.seqLen, o.valFraction ?? 0.1, o.seed)
}

export const optimizerOf = (h: Hyperparameters, defaultDecay = 0.1) => ({
  lr: h.lr,
  minLr: h.minLr,
  warmupSteps: h.warmupSteps ?? Math.round(h.steps * 0.05),
  totalSteps: h.steps,
  weightDecay: h.weightDecay ?? defaultDecay,
  clipNorm: h.clipNorm,
  beta1: h.beta1,
  beta2: h.beta2,
})

export async function train(o: TrainOptions): Promise<TrainResult> {
  const h = o.hyperparameters
  checkData(o.data, h)
  const c = o.config
  const graphs = await buildTrainGraphs({
    config: c,
    batch: h.batchSize,
    seqLen: h.seqLen,
    trainable: weightShapes(c),
    params: hfParams(c),
    optimizer: optimizerOf(h),
  })
  const state = await startState(o, () => freshState(o.weights ?? randomWeights(c, { seed: h.seed })))
  const session = await TrainSession.create(graphs, c, h.batchSize, h.seqLen, state, o.session)
  try {
    const r = await trainLoop({
      session,
      data: o.data,
      steps: h.steps,
      seed: h.seed,
      evalEvery: h.evalEvery,
      evalBatches: h.evalBatches,
      checkpointDir: o.checkpointDir,
      checkpointEvery: o.checkpointEvery,
      checkpointMeta: { kind: 'full', hyperparameters: h },
      metricsPath: o.metricsPath,
      onStep: o.onStep,
      onEval: o.onEval,
      signal: o.signal,
    })
    return {
      ...r,
      weights: session.state().params,
      valLoss: r.evals.at(-1)?.valLoss ?? null,
      resumedFrom: state.step,
    }
  } finally {
    await session.release()
  }
}

/** The checkpoint's state when resuming from one, else a fresh state. */
export async function startState(o: TrainHooks, fresh: () => OptimState): Promise<OptimState> {
  const start = fresh()
  if (o.resume) {
    if (!o.checkpointDir) throw new Error('train: resume needs a checkpointDir')
    const ck = await loadCheckpoint(o.checkpointDir)
    if (ck) {
      for (const [name, t] of start.params) {
        const got = ck.state.params.get(name)?.shape
        if (got?.join(',') !== t.shape.join(','))
          throw new Error(
            `train: checkpoint ${o.checkpointDir} has '${name}' as [${got ?? 'missing'}], the model needs [${t.shape}]`,
          )
      }
      return ck.state
    }
  }
  return start
}

export function checkData(d: Dataset, h: Hyperparameters): void {
  if (d.seqLen !== h.seqLen)
    throw new Error(`train: dataset windows are ${d.seqLen} tokens, seqLen is ${h.seqLen}`)
  if (h.batchSize < 1 || h.steps < 1) throw new Error('train: batchSize and steps must be >= 1')
}
