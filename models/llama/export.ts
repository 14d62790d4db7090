/**
 * safetensors weights + config → ONNX bytes (decoder-with-past, fp32 or fp16).
 */
import type { LlamaConfig } from '../config.js'
import { fuseSiblingMatMuls } from '../graph/fuse.js'
import { serializeGraph } from '../graph/onnx.js'
import type { Weights } from '../safetensors.js'
import { buildLlamaGraph, type FloatDType } from './graph.js'

export interface ExportOptions {
  /** Weights, KV cache and logits dtype; default fp32. */
  dtype?: 'fp32' | 'fp16'
  /** Fuse the Q/K/V and gate/up projections into one MatMul each (inference only); default true. */
  fuseProjections?: boolean
}

export function exportOnnx(weights: Weights, config: LlamaConfig, options: ExportOptions = {}): Uint8Array {
  const dtype: FloatDType = options.dtype === 'fp16' ? 'float16' : 'float32'
  const g = buildLlamaGraph(weights, config, dtype)
  if (options.fuseProjections ?? true) fuseSiblingMatMuls(g)
  return serializeGraph(g, {
    docString: 'PrometheusGPT Mini: Llama-style decoder with past (Optimum layout)',
    metadata: { model_type: 'llama', dtype: options.dtype ?? 'fp32' },
  })
}
