/**
 * The train-step graph: the serving decoder (`buildDecoder`, the same graph
 * `pgpt` exports) fed with parameters as graph inputs, a cross-entropy loss,
 * its backward pass from `models/autodiff`, and the optimizer update, all in
 * one ONNX graph that onnxruntime runs on CPU or CUDA.
 *
 *   inputs:  <param>, <param>.m, <param>.v (trainable tensors, float32),
 *            step (int64 scalar: steps done), input_ids, targets (B,T int64),
 *            attention_mask, position_ids, past_key_values.* (empty: P = 0)
 *   outputs: loss, tokens, grad_norm, lr, <param>.next, <param>.m.next, <param>.v.next
 *
 * The eval graph is the same forward and loss without the backward.
 */
import * as ort from 'onnxruntime-node'
import { gradients, pruneDeadNodes } from '../autodiff/grad.js'
import { probeShapes } from '../autodiff/shapes.js'
import { headDim, type LlamaConfig } from '../config.js'
import { Graph, type Value } from '../graph/ir.js'
import { serializeGraph } from '../graph/onnx.js'
import { buildDecoder, type LlamaParams } from '../llama/graph.js'
import { EMBED, FINAL_NORM, LM_HEAD, layerNames } from '../llama/weights.js'
import type { Weights } from '../safetensors.js'
import { crossEntropy, IGNORE_INDEX } from './loss.js'
import { adamw, type OptimizerConfig } from './optimizer.js'

export interface TrainGraphSpec {
  config: LlamaConfig
  batch: number
  seqLen: number
  /** Trainable tensors (name → dims): graph inputs, with updated values as outputs. */
  trainable: Map<string, number[]>
  /** Frozen tensors, stored in the graph as initializers (LoRA's base weights). */
  frozen?: Weights
  /** The model's parameters from the tensors by name (trainable inputs and frozen initializers). */
  params: (g: Graph, tensors: Map<string, Value>) => LlamaParams
  /** Which trainable tensors get weight decay; default: those of rank >= 2. */
  decay?: (name: string, dims: number[]) => boolean
  /** The learning rate of a trainable tensor, as a multiple of the schedule's; default 1 (LoRA+ gives B more). */
  lrScale?: (name: string) => number
  optimizer: OptimizerConfig
  ignoreIndex?: number
}

export interface TrainGraphs {
  /** Forward, loss, backward and AdamW update. */
  train: Uint8Array
  /** Forward and loss only (validation). */
  eval: Uint8Array
  /** Node counts, for logs. */
  stats: { forwardNodes: number; trainNodes: number }
}

/** Parameters of the full model from tensors in Hugging Face layout ([out, in] linears, transposed in-graph). */
export function hfParams(c: LlamaConfig) {
  return (g: Graph, t: Map<string, Value>): LlamaParams => {
    const get = (name: string) => {
      const v = t.get(name)
      if (!v) throw new Error(`train: no tensor '${name}'`)
      return v
    }
    const linear = (name: string) => g.transpose(get(name), [1, 0])
    return {
      embed: get(EMBED),
      layers: Array.from({ length: c.numLayers }, (_, i) => {
        const n = layerNames(i)
        return {
          attnNorm: get(n.attnNorm),
          q: linear(n.q),
          k: linear(n.k),
          v: linear(n.v),
          o: linear(n.o),
          mlpNorm: get(n.mlpNorm),
          gate: linear(n.gate),
          up: linear(n.up),
          down: linear(n.down),
        }
      }),
      norm: get(FINAL_NORM),
      lmHead: c.tieEmbeddings ? null : linear(LM_HEAD),
    }
  }
}

interface Forward {
  g: Graph
  loss: Value
  count: Value
  tensors: Map<string, Value>
}

function forward(spec: Omit<TrainGraphSpec, 'optimizer'>, name: string): Forward {
  const g = new Graph(name)
  const tensors = new Map<string, Value>()
  for (const [n, dims] of spec.trainable) tensors.set(n, g.input(n, 'float32', dims))
  for (const [n, t] of spec.frozen ?? []) tensors.set(n, g.initializer(n, 'float32', t.shape, t.data))
  const c = spec.config
  buildDecoder(g, spec.params(g, tensors), c, 'float32')
  const logits = g.outputs.find((v) => v.name === 'logits')
  if (!logits) throw new Error('train: the decoder has no logits output')
  g.outputs.length = 0 // presents are not needed in training
  const targets = g.input('targets', 'int64', [spec.batch, spec.seqLen])
  const { loss, count } = crossEntropy(g, logits, targets, c.vocabSize, spec.ignoreIndex ?? IGNORE_INDEX)
  return { g, loss, count, tensors }
}

/** Forward and loss only: outputs `loss` (mean over counted targets) and `tokens`. */
export function buildEvalGraph(spec: Omit<TrainGraphSpec, 'optimizer'>): Uint8Array {
  const ev = forward(spec, 'eval_step')
  ev.g.output(ev.loss, 'loss')
  ev.g.output(ev.count, 'tokens')
  pruneDeadNodes(ev.g)
  return serializeGraph(ev.g, { docString: 'PrometheusGPT eval step (forward, loss)' })
}

/** Builds the train-step and eval graphs for a fixed batch size and sequence length. */
export async function buildTrainGraphs(spec: TrainGraphSpec): Promise<TrainGraphs> {
  const evalBytes = buildEvalGraph(spec)

  const { g, loss, count, tensors } = forward(spec, 'train_step')
  const forwardNodes = g.nodes.length
  const zeros: Record<string, ort.Tensor> = {}
  for (const [n, dims] of spec.trainable) zeros[n] = floatZeros(dims)
  const shapes = await probeShapes(g, {
    ...zeros,
    ...modelInputs(spec.config, spec.batch, spec.seqLen),
    input_ids: intTensor(new BigInt64Array(spec.batch * spec.seqLen), [spec.batch, spec.seqLen]),
    targets: intTensor(new BigInt64Array(spec.batch * spec.seqLen), [spec.batch, spec.seqLen]),
  })
  const names = [...spec.trainable.keys()]
  const grads = gradients(
    g,
    loss,
    names.map((n) => tensors.get(n)!),
    shapes,
  )
  const step = g.input('step', 'int64', [])
  const decay = spec.decay ?? ((_n: string, dims: number[]) => dims.length >= 2)
  const updated = adamw(
    g,
    step,
    names.map((n) => ({
      name: n,
      value: tensors.get(n)!,
      grad: grads.get(tensors.get(n)!)!,
      m: g.input(`${n}.m`, 'float32', spec.trainable.get(n)!),
      v: g.input(`${n}.v`, 'float32', spec.trainable.get(n)!),
      decay: decay(n, spec.trainable.get(n)!),
      lrScale: spec.lrScale?.(n) ?? 1,
    })),
    spec.optimizer,
  )
  g.output(loss, 'loss')
  g.output(count, 'tokens')
  g.output(updated.gradNorm, 'grad_norm')
  g.output(updated.lr, 'lr')
  for (const p of updated.params) {
    g.output(p.value, `${p.name}.next`)
    g.output(p.m, `${p.name}.m.next`)
    g.output(p.v, `${p.name}.v.next`)
  }
  pruneDeadNodes(g)
  return {
    train: serializeGraph(g, { docString: 'PrometheusGPT train step (forward, loss, backward, AdamW)' }),
    eval: evalBytes,
    stats: { forwardNodes, trainNodes: g.nodes.length },
  }
}

/** The decoder inputs that are constant in training: a full attention mask, positions 0..T-1, an empty cache. */
export function modelInputs(c: LlamaConfig, batch: number, seqLen: number): Record<string, ort.Tensor> {
  const n = batch * seqLen
  const feeds: Record<string, ort.Tensor> = {
    attention_mask: intTensor(new BigInt64Array(n).fill(1n), [batch, seqLen]),
    position_ids: intTensor(
      BigInt64Array.from({ length: n }, (_, i) => BigInt(i % seqLen)),
      [batch, seqLen],
    ),
  }
  const past = [batch, c.numKvHeads, 0, headDim(c)]
  for (let i = 0; i < c.numLayers; i++) {
    feeds[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), past)
    feeds[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), past)
  }
  return feeds
}

export const intTensor = (data: BigInt64Array, dims: number[]) => new ort.Tensor('int64', data, dims)
const floatZeros = (dims: number[]) =>
  new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)
