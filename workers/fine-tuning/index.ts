export {
  AUTO_HYPERPARAMETERS,
  appendEvent,
  BASE_LEARNING_RATE,
  FINE_TUNE_KIND,
  type FineTuneCheckpoint,
  type FineTuneEvent,
  type FineTuneHyperparameters,
  type FineTuneInput,
  type FineTuneOutput,
  type FineTuneStatus,
  fineTunedModelName,
  fineTuneInputSchema,
  fineTuneOutputSchema,
  listCheckpoints,
  listEvents,
  readStatus,
} from '../../core/records/fine-tunes.js'
export { createFineTuneHandler, FINE_TUNE_TARGETS, type FineTuneHandlerOptions } from './handler.js'
