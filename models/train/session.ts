/**
 * Runs the train-step graph in onnxruntime and keeps the optimizer state
 * between steps. Updated parameters and moments are written by onnxruntime
 * into preallocated output tensors (two sets, swapped every step: the
 * IO-binding pattern), so a step allocates and copies no parameter-sized
 * buffers; with `preallocate: false` they come back as fresh output tensors
 * that are fed back as the next inputs. bench/train.ts measures both.
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
  /** Write updated state into preallocated, swapped tensors; default true. */
  preallocate?: boolean
}

/** Zeroed moments for the given parameters. */
export function freshState(params: Weights): OptimState {
  const zeros = (): Weights =>
    new Map([...params].map(([n, t]) => [n, { shape: [...t.shape], data: new Float32Array(t.data.length) }]))
  return { step: 0, params, m: zeros(), v: zeros() }
}

export class TrainSession {
  private tensors: Record<string, ort.Tensor> = {}
  /** Output buffers for the next step (preallocate mode). */
  private spare: Record<string, ort.Tensor> | null = null
  private step = 0

  private constructor(
    private readonly train: ort.InferenceSession,
    private readonly evalSession: ort.InferenceSession,
    private readonly fixed: Record<string, ort.Tensor>,
    private readonly names: string[],
    private readonly shapes: Map<string, number[]>,
    readonly batch: number,
    readonly seqLen: number,
    private readonly preallocate: boolean,
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
      o.preallocate ?? true,
    )
    s.load(state)
    return s
  }

  /** Replaces the optimizer state (resume). The state's arrays are copied, never written. */
  load(state: OptimState): void {
    this.step = state.step
    const spare: Record<string, ort.Tensor> = {}
    for (const n of this.names) {
      const f = (w: Weights, key: string) => {
        const t = w.get(n)
        if (!t) throw new Error(`train: state has no tensor '${n}'`)
        this.tensors[key] = new ort.Tensor('float32', Float32Array.from(t.data), t.shape)
        spare[key] = new ort.Tensor('float32', new Float32Array(t.data.length), t.shape)
      }
      f(state.params, n)
      f(state.m, `${n}.m`)
      f(state.v, `${n}.v`)
    }
    this.spare = this.preallocate ? spare : null
  }

  /** One optimizer step on one batch. */
  async run(b: Batch): Promise<StepMetrics> {
    const feeds = {
      ...this.fixed,
      ...this.tensors,
      input_ids: intTensor(b.inputs, [this.batch, this.seqLen]),
      targets: intTensor(b.targets, [this.batch, this.seqLen]),
      step: new ort.Tensor('int64', BigInt64Array.of(BigInt(this.step)), []),
    }
    const keys = this.names.flatMap((n) => [n, `${n}.m`, `${n}.v`])
    let out: ort.InferenceSession.OnnxValueMapType
    if (this.spare) {
      const fetches: Record<string, ort.Tensor | null> = {
        loss: null,
        tokens: null,
        grad_norm: null,
        lr: null,
      }
      for (const k of keys) fetches[`${k}.next`] = this.spare[k]
      out = await this.train.run(feeds, fetches)
      ;[this.tensors, this.spare] = [{ ...this.spare }, { ...this.tensors }]
    } else {
      out = await this.train.run(feeds)
      for (const k of keys) this.tensors[k] = out[`${k}.next`]
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
