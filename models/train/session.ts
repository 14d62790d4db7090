/**
 * Runs the train-step graph in onnxruntime and keeps the optimizer state
 * between steps. Updated parameters and moments come back as output tensors
 * and are fed straight back as the next step's inputs (no copy in JS).
 */
import * as ort from 'onnxruntime-node'
import type { LlamaConfig } from '../config.js'
import type { Weights } from '../safetensors.js'
import { intTensor, modelInputs, type TrainGraphs } from './step-graph.js'

/** Trainable tensors and their AdamW moments, Hugging Face names. */
export interface OptimState {
  /** Steps done. */
  step: number
  params: Weights
  m: Weights
  v: Weights
}

export interface Batch {
  /** (B·T) token ids, row-major. */
  inputs: BigInt64Array
  /** (B·T) next-token targets; IGNORE_INDEX where there is no loss. */
  targets: BigInt64Array
}

export interface StepMetrics {
  /** 1-based number of the step just done. */
  step: number
  loss: number
  gradNorm: number
  lr: number
  /** Targets that counted in the loss. */
  tokens: number
}

export interface SessionOptions {
  /** onnxruntime execution providers in order of preference; default ['cpu']. */
  executionProviders?: string[]
  /** Intra-op threads; default onnxruntime's choice. */
  threads?: number
}

/** Zeroed moments for the given parameters. */
export function freshState(params: Weights): OptimState {
  const zeros = (): Weights =>
    new Map([...params].map(([n, t]) => [n, { shape: [...t.shape], data: new Float32Array(t.data.length) }]))
  return { step: 0, params, m: zeros(), v: zeros() }
}

export class TrainSession {
  private tensors: Record<string, ort.Tensor> = {}
  private step = 0

  private constructor(
    private readonly train: ort.InferenceSession,
    private readonly evalSession: ort.InferenceSession,
    private readonly fixed: Record<string, ort.Tensor>,
    private readonly names: string[],
    private readonly shapes: Map<string, number[]>,
    readonly batch: number,
    readonly seqLen: number,
  ) {}

  static async create(
    graphs: TrainGraphs,
    config: LlamaConfig,
    batch: number,
    seqLen: number,
    state: OptimState,
    o: SessionOptions = {},
  ): Promise<TrainSession> {
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: (o.executionProviders ?? ['cpu']) as ort.InferenceSession.ExecutionProviderConfig[],
      graphOptimizationLevel: 'all',
      ...((o as { profile?: boolean }).profile
        ? { enableProfiling: true, profileFilePrefix: '/tmp/ortprof' }
        : {}),
      ...(o.threads ? { intraOpNumThreads: o.threads, interOpNumThreads: 1 } : {}),
    }
    const [train, evalSession] = await Promise.all([
      ort.InferenceSession.create(graphs.train, options),
      ort.InferenceSession.create(graphs.eval, options),
    ])
    const shapes = new Map([...state.params].map(([n, t]) => [n, t.shape]))
    const s = new TrainSession(
      train,
      evalSession,
      modelInputs(config, batch, seqLen),
      [...state.params.keys()],
      shapes,
      batch,
      seqLen,
    )
    s.load(state)
    return s
  }

  /** Replaces the optimizer state (resume). */
  load(state: OptimState): void {
    this.step = state.step
    for (const n of this.names) {
      const f = (w: Weights, key: string) => {
        const t = w.get(n)
        if (!t) throw new Error(`train: state has no tensor '${n}'`)
        this.tensors[key] = new ort.Tensor('float32', t.data, t.shape)
      }
      f(state.params, n)
      f(state.m, `${n}.m`)
      f(state.v, `${n}.v`)
    }
  }

  /** One optimizer step on one batch. */
  async run(b: Batch): Promise<StepMetrics> {
    const out = await this.train.run({
      ...this.fixed,
      ...this.tensors,
      input_ids: intTensor(b.inputs, [this.batch, this.seqLen]),
      targets: intTensor(b.targets, [this.batch, this.seqLen]),
      step: new ort.Tensor('int64', BigInt64Array.of(BigInt(this.step)), []),
    })
    for (const n of this.names) {
      this.tensors[n] = out[`${n}.next`]
      this.tensors[`${n}.m`] = out[`${n}.m.next`]
      this.tensors[`${n}.v`] = out[`${n}.v.next`]
    }
    this.step++
    return {
      step: this.step,
      loss: scalar(out.loss),
      gradNorm: scalar(out.grad_norm),
      lr: scalar(out.lr),
      tokens: scalar(out.tokens),
    }
  }

  /** Mean loss over the batches, weighted by counted tokens. */
  async evaluate(batches: Iterable<Batch>): Promise<{ loss: number; tokens: number }> {
    let sum = 0
    let tokens = 0
    const params = Object.fromEntries(this.names.map((n) => [n, this.tensors[n]]))
    for (const b of batches) {
      const out = await this.evalSession.run({
        ...this.fixed,
        ...params,
        input_ids: intTensor(b.inputs, [this.batch, this.seqLen]),
        targets: intTensor(b.targets, [this.batch, this.seqLen]),
      })
      const n = scalar(out.tokens)
      sum += scalar(out.loss) * n
      tokens += n
    }
    return { loss: tokens ? sum / tokens : Number.NaN, tokens }
  }

  get stepsDone(): number {
    return this.step
  }

  /** A snapshot of the optimizer state (tensors are copied). */
  state(): OptimState {
    const pick = (suffix: string): Weights =>
      new Map(
        this.names.map((n) => [
          n,
          {
            shape: [...this.shapes.get(n)!],
            data: Float32Array.from(this.tensors[n + suffix].data as Float32Array),
          },
        ]),
      )
    return { step: this.step, params: pick(''), m: pick('.m'), v: pick('.v') }
  }

  async release(): Promise<void> {
    await Promise.all([this.train.release(), this.evalSession.release()])
  }
}

const scalar = (t: ort.Tensor) => Number((t.data as Float32Array)[0])
