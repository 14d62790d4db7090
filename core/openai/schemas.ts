/**
 * Request and response schemas of the generation routes, in OpenAI's shape.
 * The OpenAPI document is generated from these same schemas. Extensions
 * beyond OpenAI: top_k and repetition_penalty.
 *
 * Request objects are strict: a field we do not implement (tools,
 * response_format json, logit_bias, …) is refused by name with 400
 * unsupported_parameter (zod-error.ts), never accepted and ignored — a client
 * asking for JSON must not get prose with a 200. The official SDK sends only
 * the fields its caller gives (node_modules/openai `chat.completions.create`
 * posts the body as is), so what a plain call sends is what is listed here.
 * A field is accepted without effect only when its value is what we do
 * anyway (`defaultOnly`) or it is metadata that changes no output.
 */
import { z } from '@hono/zod-openapi'
import { chatMessageSchema, SAMPLING_BOUNDS, samplingBounds } from '../protocol.js'
import { UNSUPPORTED } from './zod-error.js'

/**
 * An OpenAI field we do not implement, accepted (with null) only at the value
 * that asks for what we do anyway; any other value is refused by name.
 */
function defaultOnly<T extends z.ZodType>(
  schema: T,
  isDefault: (v: z.output<T>) => boolean,
  accepted: string,
) {
  return schema
    .nullish()
    .superRefine((v, ctx) => {
      if (v != null && !isDefault(v as z.output<T>))
        ctx.addIssue({
          code: 'custom',
          message: `only ${accepted} is supported`,
          params: { code: UNSUPPORTED },
        })
    })
    .openapi({
      description: `Accepted only as ${accepted} (what PrometheusGPT does anyway); other values are refused with unsupported_parameter.`,
    })
}

/**
 * Lengths of the request's strings, in characters (docs/operations.md "Limits"). A model id
 * is at most 128 characters (core/model-manifest.ts MODEL_ID_PATTERN): a longer one names no
 * model, so it is refused before any lookup (and never reaches a log line or a metric label).
 * A prompt, and each message's content, is at most MAX_PROMPT_CHARS — as much as the default
 * body limit can carry; the model's context bounds it further (core/openai/generation-request.ts).
 */
export const REQUEST_BOUNDS = {
  modelId: 128,
  promptChars: 1_048_576,
  messages: 2048,
} as const

/** The `model` of a request: a model id's length at most. */
export const modelField = z
  .string()
  .min(1)
  .max(REQUEST_BOUNDS.modelId)
  .openapi({
    example: 'prometheus-mini',
    description: `A model id (at most ${REQUEST_BOUNDS.modelId} characters).`,
  })
/** A prompt or a message's text. */
export const promptText = z.string().max(REQUEST_BOUNDS.promptChars)

const b = samplingBounds
const stop = z
  .union([b.stopSequence, b.stop])
  .nullish()
  .openapi({ description: `Up to ${SAMPLING_BOUNDS.stop.maxSequences} sequences where generation stops.` })

/** The sampling fields of every generation request; their bounds are core/protocol.ts SAMPLING_BOUNDS. */
export const samplingFields = {
  max_tokens: b.maxTokens.nullish().openapi({ description: 'Tokens to generate at most.' }),
  temperature: b.temperature
    .nullish()
    .openapi({ description: '0: greedy (repeatable, cached).', example: 0.7 }),
  top_p: b.topP.nullish(),
  top_k: b.topK.nullish().openapi({ description: 'Extension: keep the k likeliest tokens (0: off).' }),
  n: b.n
    .nullish()
    .openapi({ description: `Choices to generate (${SAMPLING_BOUNDS.n.min}–${SAMPLING_BOUNDS.n.max}).` }),
  stop,
  presence_penalty: b.presencePenalty.nullish(),
  frequency_penalty: b.frequencyPenalty.nullish(),
  repetition_penalty: b.repetitionPenalty
    .nullish()
    .openapi({ description: 'Extension: CTRL-style penalty.' }),
  seed: z
    .number()
    .int()
    .nullish()
    .openapi({ description: 'A fixed seed makes the request repeatable (cached).' }),
  // Metadata about the caller (abuse monitoring at OpenAI): changes no output, so accepted.
  user: z.string().max(256).optional(),
}

/** Fields both OpenAI generation endpoints have that we accept only at their default. */
const openaiDefaults = {
  // An empty bias is no bias: what we do. A non-empty one asks for logits we do not shift.
  logit_bias: defaultOnly(
    z.record(z.string(), z.number()),
    (b) => Object.keys(b).length === 0,
    '{} (no bias)',
  ),
}

const streamOptions = z.strictObject({ include_usage: z.boolean().optional() }).nullish()

export const completionRequest = z
  .strictObject({
    model: modelField,
    prompt: z.union([promptText, z.array(promptText).min(1).max(1)]).openapi({ description: 'One prompt.' }),
    ...samplingFields,
    ...openaiDefaults,
    // best_of 1 (OpenAI's default) is one candidate per choice: what we do.
    best_of: defaultOnly(z.number().int(), (n) => n === 1, '1'),
    stream: z.boolean().nullish(),
    stream_options: streamOptions,
    logprobs: b.completionLogprobs.nullish(),
    echo: z.boolean().nullish(),
  })
  .openapi('CompletionRequest')
export type CompletionRequest = z.infer<typeof completionRequest>

/**
 * A text part of a message's content. Strict: another part (image_url,
 * input_audio, file, refusal) has a key of its own that is then refused by
 * name (`messages[0].content[1].image_url`).
 */
const textPart = z.strictObject({ type: z.literal('text'), text: promptText })

/**
 * A chat message as OpenAI's clients send it. Strict: tool_calls,
 * function_call, audio, tool_call_id are refused by name. `refusal: null` is
 * accepted because our responses carry it, so a reply sent back as returned
 * must work; it is dropped, leaving the protocol's message (core/protocol.ts).
 */
export const chatMessage = z
  .strictObject({
    role: chatMessageSchema.shape.role,
    content: z.union([
      promptText,
      z
        .array(textPart)
        .max(REQUEST_BOUNDS.messages)
        .transform((parts) => parts.map((p) => p.text).join('')),
    ]),
    name: z.string().max(256).optional(),
    refusal: defaultOnly(z.string(), () => false, 'null'),
  })
  .transform(({ refusal: _refusal, ...m }) => m)
  .openapi('ChatMessage')

export const chatRequest = z
  .strictObject({
    model: modelField,
    messages: z.array(chatMessage).min(1).max(REQUEST_BOUNDS.messages),
    ...samplingFields,
    ...openaiDefaults,
    max_completion_tokens: b.maxTokens.nullish(),
    stream: z.boolean().nullish(),
    stream_options: streamOptions,
    logprobs: z.boolean().nullish(),
    top_logprobs: b.topLogprobs.nullish(),
    // {"type":"text"} is the default: text is what we return. json_object and json_schema are refused.
    response_format: defaultOnly(
      z.looseObject({ type: z.string() }),
      (f) => f.type === 'text' && Object.keys(f).length === 1,
      '{"type":"text"}',
    ),
    // We store no completions (OpenAI's store is for distillation/evals): false is what we do.
    store: defaultOnly(z.boolean(), (v) => v === false, 'false'),
    // One tier: 'auto' and 'default' are it; flex, scale and priority promise what we do not.
    service_tier: defaultOnly(z.string(), (t) => t === 'auto' || t === 'default', "'auto' or 'default'"),
    // Metadata that changes no output (OpenAI: tags of stored completions; a caller id), so accepted.
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
      .nullish(),
    safety_identifier: z.string().max(256).nullish(),
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
