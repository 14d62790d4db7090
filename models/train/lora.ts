/**
 * LoRA (Hu et al. 2021, arXiv:2106.09685): the base weights are frozen (baked
 * into the train-step graph as initializers, so they cannot change) and each
 * targeted linear W [out, in] trains a low-rank update
 *
 *   W' = W + (alpha / rank) · B · A,   A [rank, in] ~ U(±1/√in), B [out, rank] = 0
 *
 * so training starts from the base model exactly. Adapters are stored as PEFT
 * does (`adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight`,
 * `adapter_config.json`), and `mergeLora` folds them into a copy of the base.
 *
 * Trainable tokens (PEFT's `trainable_token_indices`, stored as
 * `…embed_tokens.token_adapter.trainable_tokens_delta` [tokens, hidden]): an
 * adapter may also train the embedding rows of some tokens, as deltas that
 * start at 0. With a tied LM head the same rows are the head's, so they move
 * what the model reads and what it writes. A LoRA on the projections cannot
 * do that: it can only steer hidden states towards the frozen rows, and a
 * small base leaves rarely seen tokens — its chat template's <|im_start|> /
 * <|im_end|> when it never trained on chats — crowded in one corner of the
 * embedding, where steering alone barely tells them apart.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { LlamaConfig } from '../config.js'
import { readModelFolder } from '../folder.js'
import type { Graph, Value } from '../graph/ir.js'
import { PROJECTIONS, type Projection } from '../llama/graph.js'
import { EMBED, layerNames, mulberry32 } from '../llama/weights.js'
import { readSafetensors, type Weights, writeSafetensors } from '../safetensors.js'
import { createTokenizer, type PrometheusTokenizer } from '../tokenizer/tokenizer.js'
import type { Dataset } from './data.js'
import type { LoopResult } from './loop.js'
import { trainLoop } from './loop.js'
import { freshState, TrainSession } from './session.js'
import { buildTrainGraphs, hfParams } from './step-graph.js'
import {
  checkData,
  type DataOptions,
  type Hyperparameters,
  optimizerOf,
  prepareDataset,
  startState,
  type TrainHooks,
} from './train.js'

/** Linear layers an adapter may target: a block's projections, by their PEFT names. */
export const LORA_MODULES = PROJECTIONS
export type LoraModule = Projection

export interface LoraConfig {
  /** Rank r of the update B·A. */
  rank: number
  /** Scale numerator: the update is multiplied by alpha / rank. */
  alpha: number
  /** Linear layers that get adapters (PEFT's target_modules). */
  targetModules: LoraModule[]
  /** Token ids whose embedding rows train too, ascending (PEFT's trainable_token_indices); default none. */
  trainableTokens?: number[]
}

export const ADAPTER_FILES = { weights: 'adapter_model.safetensors', config: 'adapter_config.json' } as const

/** PEFT's name of the trainable-token deltas [tokens, hidden] (rows in `trainableTokens` order). */
export const TOKENS_DELTA = 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta'

const tokensOf = (lora: LoraConfig) => lora.trainableTokens ?? []

function checkTokens(c: LlamaConfig, lora: LoraConfig): void {
  const ids = tokensOf(lora)
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
      throw new Error(`lora: trainable token ${id} is outside the vocabulary (${c.vocabSize})`)
    if (i > 0 && id <= ids[i - 1]) throw new Error('lora: trainable tokens must be ascending and distinct')
  })
}

/** Base linear weight names (HF) that the config targets. */
export function targetedWeights(c: LlamaConfig, lora: LoraConfig): string[] {
  for (const m of lora.targetModules)
    if (!LORA_MODULES.includes(m))
      throw new Error(`lora: unknown target module '${m}' (one of ${LORA_MODULES.join(', ')})`)
  const out: string[] = []
  for (let i = 0; i < c.numLayers; i++)
    for (const name of Object.values(layerNames(i)))
      if (lora.targetModules.some((m) => name.endsWith(`.${m}.weight`))) out.push(name)
  return out
}

/** PEFT names of the two adapter matrices of a base weight. */
export const adapterNames = (weight: string) => {
  const stem = `base_model.model.${weight.replace(/\.weight$/, '')}`
  return { a: `${stem}.lora_A.weight`, b: `${stem}.lora_B.weight` }
}

export function loraShapes(c: LlamaConfig, base: Weights, lora: LoraConfig): Map<string, number[]> {
  if (lora.rank < 1) throw new Error('lora: rank must be >= 1')
  const shapes = new Map<string, number[]>()
  for (const w of targetedWeights(c, lora)) {
    const [out, inp] = base.get(w)!.shape
    const n = adapterNames(w)
    shapes.set(n.a, [lora.rank, inp])
    shapes.set(n.b, [out, lora.rank])
  }
  checkTokens(c, lora)
  if (tokensOf(lora).length) shapes.set(TOKENS_DELTA, [tokensOf(lora).length, c.hiddenSize])
  return shapes
}

/** A ~ U(−1/√in, 1/√in) (PEFT's kaiming_uniform(a=√5)), B = 0; token deltas 0. */
export function initLora(c: LlamaConfig, base: Weights, lora: LoraConfig, seed = 0): Weights {
  const rand = mulberry32(seed)
  const w: Weights = new Map()
  for (const [name, shape] of loraShapes(c, base, lora)) {
    const data = new Float32Array(shape[0] * shape[1])
    if (name.endsWith('lora_A.weight')) {
      const bound = 1 / Math.sqrt(shape[1])
      for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * bound
    }
    w.set(name, { shape, data })
  }
  return w
}

/**
 * Model parameters with W + (alpha/r)·B·A for targeted linears (base tensors
 * by their HF names), and the embedding plus the trainable-token deltas:
 * E + Gather([0; D], row) with row[v] = 1 + (v's place in trainableTokens),
 * else 0 — the backward pass scatters each token's gradient to its row.
 */
export function loraParams(c: LlamaConfig, lora: LoraConfig) {
  const targeted = new Set(targetedWeights(c, lora))
  const full = hfParams(c)
  const tokens = tokensOf(lora)
  return (g: Graph, t: Map<string, Value>) => {
    const merged = new Map(t)
    for (const w of targeted) {
      const n = adapterNames(w)
      const delta = g.mul(g.matmul(t.get(n.b)!, t.get(n.a)!), g.scalar(lora.alpha / lora.rank))
      merged.set(w, g.add(t.get(w)!, delta))
    }
    if (tokens.length) {
      const row = new BigInt64Array(c.vocabSize)
      tokens.forEach((id, k) => {
        row[id] = BigInt(k + 1)
      })
      const rows = g.concat(
        [g.constant('float32', [1, c.hiddenSize], Array(c.hiddenSize).fill(0)), t.get(TOKENS_DELTA)!],
        0,
      )
      const at = g.initializer('trainable_token_rows', 'int64', [c.vocabSize], row)
      merged.set(EMBED, g.add(t.get(EMBED)!, g.gather(rows, at)))
    }
    return full(g, merged)
  }
}

/** A copy of the base with the adapters folded in (the base is not modified). */
export function mergeLora(c: LlamaConfig, base: Weights, adapters: Weights, lora: LoraConfig): Weights {
  const out: Weights = new Map([...base].map(([n, t]) => [n, { shape: [...t.shape], data: t.data }]))
  const scale = lora.alpha / lora.rank
  for (const w of targetedWeights(c, lora)) {
    const n = adapterNames(w)
    const A = adapters.get(n.a)
    const B = adapters.get(n.b)
    if (!A || !B) throw new Error(`lora: adapters miss '${n.a}' or '${n.b}'`)
    const [out_, inp] = base.get(w)!.shape
    const data = Float32Array.from(base.get(w)!.data)
    const r = lora.rank
    for (let o = 0; o < out_; o++)
      for (let k = 0; k < r; k++) {
        const b = B.data[o * r + k] * scale
        if (b === 0) continue
        for (let i = 0; i < inp; i++) data[o * inp + i] += b * A.data[k * inp + i]
      }
    out.set(w, { shape: [out_, inp], data })
  }
  const tokens = tokensOf(lora)
  if (tokens.length) {
    checkTokens(c, lora)
    const D = adapters.get(TOKENS_DELTA)
    const C = c.hiddenSize
    if (!D || D.shape[0] !== tokens.length || D.shape[1] !== C)
      throw new Error(`lora: adapters miss '${TOKENS_DELTA}' [${tokens.length}, ${C}]`)
    // The embedding (and so, when tied, the LM head): PEFT's merge of trainable tokens.
    const E = Float32Array.from(base.get(EMBED)!.data)
    tokens.forEach((id, k) => {
      for (let j = 0; j < C; j++) E[id * C + j] += D.data[k * C + j]
    })
    out.set(EMBED, { shape: [...base.get(EMBED)!.shape], data: E })
  }
  return out
}

/** Writes PEFT's adapter_model.safetensors and adapter_config.json. */
export async function saveAdapter(
  dir: string,
  adapters: Weights,
  lora: LoraConfig,
  baseModel = '',
): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(
    join(dir, ADAPTER_FILES.weights),
    writeSafetensors(adapters, { metadata: { format: 'pt' } }),
  )
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: lora.rank,
    lora_alpha: lora.alpha,
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    target_modules: lora.targetModules,
    ...(tokensOf(lora).length ? { trainable_token_indices: tokensOf(lora) } : {}),
    inference_mode: true,
  }
  await writeFile(join(dir, ADAPTER_FILES.config), `${JSON.stringify(config, null, 2)}\n`)
}

export async function loadAdapter(dir: string): Promise<{ adapters: Weights; lora: LoraConfig }> {
  const cfg = JSON.parse(await readFile(join(dir, ADAPTER_FILES.config), 'utf8')) as {
    r: number
    lora_alpha: number
    target_modules: LoraModule[]
    /** PEFT also allows {module: ids}; ours train the input embedding. */
    trainable_token_indices?: number[] | Record<string, number[]> | null
  }
  const { tensors } = readSafetensors(await readFile(join(dir, ADAPTER_FILES.weights)))
  const t = cfg.trainable_token_indices
  const tokens = Array.isArray(t) ? t : t ? (t.embed_tokens ?? Object.values(t)[0] ?? []) : []
  return {
    adapters: tensors,
    lora: {
      rank: cfg.r,
      alpha: cfg.lora_alpha,
      targetModules: cfg.target_modules,
      ...(tokens.length ? { trainableTokens: tokens } : {}),
    },
  }
}

/**
 * Trainable-token rows learn at this fraction of the LoRA learning rate:
 * they are whole parameters, as in full fine-tuning, whose rates are a
 * fraction of LoRA's (measured on prometheus-mini: 0.1 learns the rows too
 * slowly, 1 overshoots; 0.2–0.4 work).
 */
export const TOKENS_LR_SCALE = 0.25

/** `lrScale` of a LoRA train-step graph: token rows at TOKENS_LR_SCALE, the rest at 1. */
export const loraLrScale = (name: string) => (name === TOKENS_DELTA ? TOKENS_LR_SCALE : 1)

export interface LoraHyperparameters extends Hyperparameters, LoraConfig {}

export interface TrainLoraOptions extends TrainHooks {
  /** A model folder (config.json, model.safetensors, tokenizer.json). */
  baseDir: string
  /** A prepared dataset, or files/texts tokenized with the base model's tokenizer. */
  data: Dataset | Omit<DataOptions, 'tokenizer' | 'seqLen' | 'seed'>
  hyperparameters: LoraHyperparameters
  /** Writes the adapter (PEFT layout) here at the end. */
  adapterDir?: string
}

export interface TrainLoraResult extends LoopResult {
  adapters: Weights
  lora: LoraConfig
  config: LlamaConfig
  /** Validation loss before training (step 0, base model) and after. */
  baseValLoss: number | null
  valLoss: number | null
  tokenizer: PrometheusTokenizer
}

export async function trainLora(o: TrainLoraOptions): Promise<TrainLoraResult> {
  const h = o.hyperparameters
  const base = await readModelFolder(o.baseDir)
  if (!base.tokenizer) throw new Error(`lora: ${o.baseDir} has no tokenizer.json`)
  const tokenizer = createTokenizer(base.tokenizer)
  const c = base.config
  const data =
    'packed' in o.data
      ? o.data
      : await prepareDataset({ ...o.data, tokenizer, seqLen: h.seqLen, seed: h.seed })
  checkData(data, h)
  const lora: LoraConfig = {
    rank: h.rank,
    alpha: h.alpha,
    targetModules: h.targetModules,
    ...(h.trainableTokens?.length ? { trainableTokens: h.trainableTokens } : {}),
  }
  const graphs = await buildTrainGraphs({
    config: c,
    batch: h.batchSize,
    seqLen: h.seqLen,
    trainable: loraShapes(c, base.weights, lora),
    frozen: base.weights,
    params: loraParams(c, lora),
    decay: () => true,
    lrScale: loraLrScale,
    optimizer: optimizerOf(h, 0),
  })
  const state = await startState(o, () => freshState(initLora(c, base.weights, lora, h.seed)))
  const session = await TrainSession.create(graphs, c, h.batchSize, h.seqLen, state, o.session)
  try {
    const r = await trainLoop({
      session,
      data,
      steps: h.steps,
      seed: h.seed,
      evalEvery: h.evalEvery,
      evalBatches: h.evalBatches,
      evalAtStart: true,
      checkpointDir: o.checkpointDir,
      checkpointEvery: o.checkpointEvery,
      checkpointMeta: { kind: 'lora', baseDir: o.baseDir, hyperparameters: h },
      metricsPath: o.metricsPath,
      onStep: o.onStep,
      onEval: o.onEval,
      signal: o.signal,
    })
    const adapters = session.state().params
    if (o.adapterDir) await saveAdapter(o.adapterDir, adapters, lora, o.baseDir)
    return {
      ...r,
      adapters,
      lora,
      config: c,
      baseValLoss: r.evals.find((e) => e.step === 0)?.valLoss ?? null,
      valLoss: r.evals.at(-1)?.valLoss ?? null,
      tokenizer,
    }
  } finally {
    await session.release()
  }
}
