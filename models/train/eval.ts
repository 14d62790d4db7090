/** Validation loss of a set of weights on a dataset's validation windows (forward and loss graph only). */
import * as ort from 'onnxruntime-node'
import type { LlamaConfig } from '../config.js'
import { weightShapes } from '../llama/weights.js'
import type { Weights } from '../safetensors.js'
import { type Dataset, valBatches } from './data.js'
import type { SessionOptions } from './session.js'
import { buildEvalGraph, hfParams, intTensor, modelInputs } from './step-graph.js'

export async function evaluateWeights(
  c: LlamaConfig,
  weights: Weights,
  data: Dataset,
  batchSize: number,
  o: SessionOptions & { maxBatches?: number } = {},
): Promise<{ loss: number; tokens: number }> {
  const bytes = buildEvalGraph({
    config: c,
    batch: batchSize,
    seqLen: data.seqLen,
    trainable: weightShapes(c),
    params: hfParams(c),
  })
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: (o.executionProviders ?? ['cpu']) as ort.InferenceSession.ExecutionProviderConfig[],
    ...(o.threads ? { intraOpNumThreads: o.threads } : {}),
  })
  const fixed = modelInputs(c, batchSize, data.seqLen)
  for (const [n, t] of weights)
    if (weightShapes(c).has(n)) fixed[n] = new ort.Tensor('float32', t.data, t.shape)
  let sum = 0
  let tokens = 0
  try {
    for (const b of valBatches(data, batchSize, o.maxBatches)) {
      const out = await session.run({
        ...fixed,
        input_ids: intTensor(b.inputs, [batchSize, data.seqLen]),
        targets: intTensor(b.targets, [batchSize, data.seqLen]),
      })
      const n = Number(out.tokens.data[0])
      sum += Number(out.loss.data[0]) * n
      tokens += n
    }
  } finally {
    await session.release()
  }
  return { loss: tokens ? sum / tokens : Number.NaN, tokens }
}
