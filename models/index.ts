export {
  fromHfConfig,
  headDim,
  type LlamaConfig,
  type LlamaConfigInput,
  LlamaConfigSchema,
  loadConfig,
  parseConfig,
  saveConfig,
  toHfConfig,
} from './config.js'
export {
  defaultGenerationConfig,
  exportModelFolder,
  FILES,
  type GenerationConfig,
  type ModelFolder,
  readModelFolder,
  type WriteModelFolderOptions,
  writeModelFolder,
} from './folder.js'
export { fuseSiblingMatMuls } from './graph/fuse.js'
export * from './graph/ir.js'
export { describeOnnx, type OnnxSummary, serializeGraph, toOnnxModel } from './graph/onnx.js'
export { fromBf16, fromHalf, toBf16, toHalf } from './half.js'
export { type ExportOptions, exportOnnx } from './llama/export.js'
export { buildDecoder, buildLlamaGraph, DIMS, type LlamaParams, weightParams } from './llama/graph.js'
export { type ReferenceOptions, referenceForward } from './llama/reference.js'
export {
  checkWeights,
  type InitOptions,
  parameterCount,
  randomWeights,
  weightShapes,
} from './llama/weights.js'
export {
  type FloatTensor,
  readSafetensors,
  type SafeDType,
  type SafetensorsFile,
  type Weights,
  writeSafetensors,
} from './safetensors.js'
export {
  CHATML_TEMPLATE,
  type ChatMessage,
  createTokenizer,
  loadTokenizer,
  type PrometheusTokenizer,
  readTokenizerFiles,
  SPECIAL_TOKENS,
  saveTokenizer,
  type TokenizerFiles,
  type TrainTokenizerOptions,
  trainTokenizer,
} from './tokenizer/tokenizer.js'
