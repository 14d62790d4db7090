/**
 * The contract between the edge and the workers: what a queued message holds,
 * what a generation job's input and output look like, and the data of the
 * events a worker publishes while it runs. Both sides validate with these
 * schemas, so a message from an older or newer build fails loudly, not oddly.
 */
import { z } from 'zod'

/** The queue carries only a pointer; the job record holds the input. */
export const queueMessageSchema = z.object({
  jobId: z.string().min(1),
  kind: z.string().min(1),
  requestId: z.string().optional(),
})
export type QueueMessageBody = z.infer<typeof queueMessageSchema>

export const chatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool', 'developer']),
  content: z.union([
    z.string(),
    z
      .array(z.object({ type: z.literal('text'), text: z.string() }))
      .transform((parts) => parts.map((p) => p.text).join('')),
  ]),
  name: z.string().optional(),
})
export type ChatMessage = z.infer<typeof chatMessageSchema>

/**
 * The bounds of the sampling parameters, defined once. The edge's request
 * schemas (core/openai/schemas.ts: nullable, OpenAI's snake_case names) and
 * the protocol's samplingSchema (camelCase, defaulted) are both built from
 * `samplingBounds` below, so the edge refuses what the worker would refuse.
 * The worker checks a job's input against the protocol schema and trusts it
 * (workers/generation/handler.ts); it does not validate them again.
 */
export const SAMPLING_BOUNDS = {
  /** max_tokens (and chat's max_completion_tokens): the cap regardless of the model. */
  maxTokens: { min: 1, max: 32_768 },
  temperature: { min: 0, max: 2 },
  /** top_p: above 0 (exclusive), at most 1. */
  topP: { above: 0, max: 1 },
  /** top_k: 0 is off. */
  topK: { min: 0 },
  n: { min: 1, max: 16 },
  /** stop: up to this many non-empty sequences, each at most maxLength characters. */
  stop: { maxSequences: 4, maxLength: 512 },
  presencePenalty: { min: -2, max: 2 },
  frequencyPenalty: { min: -2, max: 2 },
  /** repetition_penalty: above 0 (exclusive), at most 10; 1 is off. */
  repetitionPenalty: { above: 0, max: 10 },
  /** Alternatives per token: chat's top_logprobs, a job's logprobs, the protocol's logprobs. */
  topLogprobs: { min: 0, max: 20 },
  /** Completions' logprobs (OpenAI's legacy endpoint allows at most 5). */
  completionLogprobs: { min: 0, max: 5 },
} as const

const B = SAMPLING_BOUNDS
const stopSequence = z.string().min(1).max(B.stop.maxLength)
/** One zod schema per bound (immutable: each user adds .nullish(), .default(), .openapi()). */
export const samplingBounds = {
  maxTokens: z.number().int().min(B.maxTokens.min).max(B.maxTokens.max),
  temperature: z.number().min(B.temperature.min).max(B.temperature.max),
  topP: z.number().gt(B.topP.above).max(B.topP.max),
  topK: z.number().int().min(B.topK.min),
  n: z.number().int().min(B.n.min).max(B.n.max),
  stopSequence,
  stop: z.array(stopSequence).max(B.stop.maxSequences),
  presencePenalty: z.number().min(B.presencePenalty.min).max(B.presencePenalty.max),
  frequencyPenalty: z.number().min(B.frequencyPenalty.min).max(B.frequencyPenalty.max),
  repetitionPenalty: z.number().gt(B.repetitionPenalty.above).max(B.repetitionPenalty.max),
  topLogprobs: z.number().int().min(B.topLogprobs.min).max(B.topLogprobs.max),
  completionLogprobs: z.number().int().min(B.completionLogprobs.min).max(B.completionLogprobs.max),
}

/** Normalised sampling parameters, validated and defaulted by the edge (the bounds above). */
export const samplingSchema = z.object({
  maxTokens: samplingBounds.maxTokens,
  temperature: samplingBounds.temperature.default(1),
  topP: samplingBounds.topP.default(1),
  topK: samplingBounds.topK.default(0),
  presencePenalty: samplingBounds.presencePenalty.default(0),
  frequencyPenalty: samplingBounds.frequencyPenalty.default(0),
  repetitionPenalty: samplingBounds.repetitionPenalty.default(1),
  seed: z.number().int().optional(),
  stop: samplingBounds.stop.default([]),
  n: samplingBounds.n.default(1),
  /** Top alternatives per token to return; null: no logprobs. */
  logprobs: samplingBounds.topLogprobs.nullable().default(null),
})
export type Sampling = z.infer<typeof samplingSchema>

/** Input of a `generation` job. Exactly one of prompt/messages is set. */
export const generationInputSchema = z.object({
  endpoint: z.enum(['completions', 'chat.completions']),
  model: z.string().min(1),
  prompt: z.string().optional(),
  messages: z.array(chatMessageSchema).optional(),
  sampling: samplingSchema,
  /** Whether the caller streams (the worker then publishes token events). */
  stream: z.boolean().default(false),
  /** Completions: prepend the prompt to the returned text. */
  echo: z.boolean().default(false),
})
export type GenerationInput = z.infer<typeof generationInputSchema>

/**
 * The usage kind (core/ports/usage-store.ts) a generation is metered as: by
 * the worker that ran its job, and by the edge for a cache hit.
 */
export const usageKind = (r: Pick<GenerationInput, 'endpoint'>) =>
  r.endpoint === 'completions' ? 'completion' : 'chat.completion'

export const tokenLogprobSchema = z.object({
  token: z.string(),
  logprob: z.number(),
  bytes: z.array(z.number()).nullable(),
  top: z.array(z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number()).nullable() })),
})
export type TokenLogprob = z.infer<typeof tokenLogprobSchema>

export const generationChoiceSchema = z.object({
  index: z.number().int(),
  text: z.string(),
  finishReason: z.enum(['stop', 'length']),
  logprobs: z.array(tokenLogprobSchema).nullable().default(null),
})
export type GenerationChoice = z.infer<typeof generationChoiceSchema>

export const usageSchema = z.object({
  promptTokens: z.number().int().min(0),
  completionTokens: z.number().int().min(0),
})
export type Usage = z.infer<typeof usageSchema>

/** Output of a succeeded `generation` job; also the data of its `completed` event. */
export const generationOutputSchema = z.object({
  model: z.string(),
  choices: z.array(generationChoiceSchema),
  usage: usageSchema,
})
export type GenerationOutput = z.infer<typeof generationOutputSchema>

/**
 * Output of a `generation` job canceled while it ran (e.g. its streaming
 * client left); also the data of its `canceled` event. What it generated by
 * then: each choice's text (`finishReason` null where it had not finished)
 * and the tokens actually processed, which the worker meters, not max_tokens.
 */
export const canceledGenerationSchema = z.object({
  model: z.string(),
  choices: z.array(generationChoiceSchema.extend({ finishReason: z.enum(['stop', 'length']).nullable() })),
  usage: usageSchema,
})
export type CanceledGeneration = z.infer<typeof canceledGenerationSchema>

/** Data of a `token` event: a UTF-8-complete piece of one choice's text. */
export const tokenEventDataSchema = z.object({
  index: z.number().int(),
  text: z.string(),
  logprob: tokenLogprobSchema.optional(),
})
export type TokenEventData = z.infer<typeof tokenEventDataSchema>

/** Data of a `failed` event, and a job record's error. */
export const failureSchema = z.object({ message: z.string(), code: z.string() })
