export { CHECKPOINT_FILES, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js'
export {
  BatchSchedule,
  type Dataset,
  type Doc,
  makeBatch,
  type Packed,
  pack,
  readDocs,
  splitDataset,
  tokenizeRecord,
  unigramEntropy,
  valBatches,
} from './data.js'
export { evaluateWeights } from './eval.js'
export { type ExportFolderOptions, writeTrainedModel } from './export.js'
export { runTrainJob, type TrainJobOptions, type TrainJobResult } from './job.js'
export {
  type EvalReport,
  type LoopOptions,
  type LoopResult,
  readMetrics,
  type StepReport,
  trainLoop,
} from './loop.js'
export {
  ADAPTER_FILES,
  adapterNames,
  initLora,
  LORA_MODULES,
  type LoraConfig,
  type LoraHyperparameters,
  type LoraModule,
  loadAdapter,
  loraParams,
  loraShapes,
  mergeLora,
  saveAdapter,
  type TrainLoraOptions,
  type TrainLoraResult,
  trainLora,
} from './lora.js'
export { crossEntropy, IGNORE_INDEX } from './loss.js'
export { adamw, type OptimizerConfig, scheduledLr } from './optimizer.js'
export { lossCurvePng, writeLossCurve } from './plot.js'
export { progressBar } from './progress.js'
export { type SampleOptions, sampleText } from './sample.js'
export {
  type Batch,
  freshState,
  type OptimState,
  type SessionOptions,
  type StepMetrics,
  TrainSession,
} from './session.js'
export {
  buildEvalGraph,
  buildTrainGraphs,
  hfParams,
  modelInputs,
  type TrainGraphSpec,
  type TrainGraphs,
} from './step-graph.js'
export {
  type DataOptions,
  type Hyperparameters,
  prepareDataset,
  type TrainHooks,
  type TrainOptions,
  type TrainResult,
  train,
} from './train.js'
