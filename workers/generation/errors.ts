/**
 * Typed errors of the generation engine. Each is an ApiError (core/errors.ts),
 * so the worker can store `{ message, code }` on the job and the edge can
 * render it as OpenAI's error object with the right HTTP status.
 */
import { ApiError, type ApiErrorOptions } from '../../core/errors.js'

export class GenerationError extends ApiError {
  constructor(status: number, message: string, options: ApiErrorOptions & { code: string }) {
    super(status, message, options)
  }
}

/** The prompt (plus what must be generated) does not fit the model's context. */
export const contextLengthExceeded = (promptTokens: number, contextLength: number, maxTokens?: number) =>
  new GenerationError(
    400,
    maxTokens === undefined
      ? `This model's maximum context length is ${contextLength} tokens, but the prompt has ${promptTokens} tokens.`
      : `This model's maximum context length is ${contextLength} tokens, but ${promptTokens} prompt tokens ` +
          `plus at least 1 completion token were requested (max_tokens ${maxTokens}).`,
    { code: 'context_length_exceeded', param: 'messages' },
  )

export const modelNotFound = (model: string, cause?: unknown) =>
  new GenerationError(404, `The model '${model}' does not exist or is not available.`, {
    code: 'model_not_found',
    param: 'model',
    cause,
  })

/** A sampling parameter or input field the engine cannot honour. */
export const invalidParameter = (param: string, message: string) =>
  new GenerationError(400, message, { code: 'invalid_parameter', param })

/** A model folder that is present but unusable (checksum, missing file, bad config). */
export const modelLoadFailed = (model: string, reason: string, cause?: unknown) =>
  new GenerationError(500, `The model '${model}' could not be loaded: ${reason}`, {
    code: 'model_load_failed',
    param: 'model',
    cause,
  })

/** The job was cancelled through its AbortSignal. */
export const generationCancelled = () =>
  new GenerationError(499, 'The generation was cancelled.', {
    code: 'cancelled',
    type: 'invalid_request_error',
  })

export const isGenerationError = (err: unknown): err is GenerationError => err instanceof GenerationError
