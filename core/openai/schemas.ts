/**
 * Request and response schemas of the generation routes, in OpenAI's shape.
 * The OpenAPI document is generated from these same schemas. Extensions
 * beyond OpenAI: top_k and repetition_penalty.
 */
import { z } from '@hono/zod-openapi'
import { chatMessageSchema } from '../protocol.js'

/** Upper bound of max_tokens regardless of the model. */
export const MAX_TOKENS_CAP = 32_768

const stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(4)])
  .nullish()
  .openapi({ description: 'Up to 4 sequences where generation stops.' })

export const samplingFields = {
  max_tokens: z
    .number()
    .int()
    .min(1)
    .max(MAX_TOKENS_CAP)
    .nullish()
    .openapi({ description: 'Tokens to generate at most.' }),
  temperature: z
    .number()
    .min(0)
    .max(2)
    .nullish()
    .openapi({ description: '0: greedy (repeatable, cached).', example: 0.7 }),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z
    .number()
    .int()
    .min(0)
    .nullish()
    .openapi({ description: 'Extension: keep the k likeliest tokens (0: off).' }),
  n: z.number().int().min(1).max(16).nullish().openapi({ description: 'Choices to generate (1–16).' }),
  stop,
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z
    .number()
    .gt(0)
    .max(10)
    .nullish()
    .openapi({ description: 'Extension: CTRL-style penalty.' }),
  seed: z
    .number()
    .int()
    .nullish()
    .openapi({ description: 'A fixed seed makes the request repeatable (cached).' }),
  user: z.string().max(256).optional(),
}

const streamOptions = z.object({ include_usage: z.boolean().optional() }).nullish()

export const completionRequest = z
  .object({
    model: z.string().min(1).openapi({ example: 'prometheus-mini' }),
    prompt: z.union([z.string(), z.array(z.string()).min(1).max(1)]).openapi({ description: 'One prompt.' }),
    ...samplingFields,
    stream: z.boolean().nullish(),
    stream_options: streamOptions,
    logprobs: z.number().int().min(0).max(5).nullish(),
    echo: z.boolean().nullish(),
  })
  .openapi('CompletionRequest')
export type CompletionRequest = z.infer<typeof completionRequest>

export const chatRequest = z
  .object({
    model: z.string().min(1).openapi({ example: 'prometheus-mini' }),
    messages: z.array(chatMessageSchema).min(1),
    ...samplingFields,
    max_completion_tokens: z.number().int().min(1).max(MAX_TOKENS_CAP).nullish(),
    stream: z.boolean().nullish(),
    stream_options: streamOptions,
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(20).nullish(),
  })
  .openapi('ChatCompletionRequest')
export type ChatRequest = z.infer<typeof chatRequest>

const usage = z
  .object({
    prompt_tokens: z.number().int(),
    completion_tokens: z.number().int(),
    total_tokens: z.number().int(),
  })
  .openapi('Usage')

export const completionResponse = z
  .object({
    id: z.string(),
    object: z.literal('text_completion'),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(
      z.object({
        index: z.number().int(),
        text: z.string(),
        logprobs: z.unknown().nullable(),
        finish_reason: z.enum(['stop', 'length']).nullable(),
      }),
    ),
    usage: usage.optional(),
  })
  .openapi('Completion')

export const chatResponse = z
  .object({
    id: z.string(),
    object: z.literal('chat.completion'),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(
      z.object({
        index: z.number().int(),
        message: z.object({ role: z.literal('assistant'), content: z.string(), refusal: z.null() }),
        logprobs: z.unknown().nullable(),
        finish_reason: z.enum(['stop', 'length']),
      }),
    ),
    usage,
  })
  .openapi('ChatCompletion')

export const errorResponse = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string(),
      param: z.string().nullable(),
      code: z.string().nullable(),
    }),
  })
  .openapi('Error')

const err = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorResponse } },
})

/** The error responses every authenticated route may give. */
export const authErrors = {
  401: err('Missing or invalid API key.'),
  403: err('The key lacks the scope.'),
  429: err('Rate limit reached; see Retry-After.'),
} as const

export const generationErrors = {
  400: err('Invalid request, or the prompt does not fit the context (code context_length_exceeded).'),
  ...authErrors,
  404: err('Unknown model.'),
  413: err('Body too large.'),
  500: err('The generation failed.'),
  504: err('The generation did not finish in time.'),
} as const

export { err as errorResponseOf }
