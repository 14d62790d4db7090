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

/** Normalised sampling parameters, already validated and defaulted by the edge. */
export const samplingSchema = z.object({
  maxTokens: z.number().int().min(1),
  temperature: z.number().min(0).max(2).default(1),
  topP: z.number().gt(0).max(1).default(1),
  topK: z.number().int().min(0).default(0),
  presencePenalty: z.number().min(-2).max(2).default(0),
  frequencyPenalty: z.number().min(-2).max(2).default(0),
  repetitionPenalty: z.number().gt(0).max(10).default(1),
  seed: z.number().int().optional(),
  stop: z.array(z.string().min(1)).max(4).default([]),
  n: z.number().int().min(1).max(16).default(1),
  /** Top alternatives per token to return; null: no logprobs. */
  logprobs: z.number().int().min(0).max(20).nullable().default(null),
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

/** Data of a `token` event: a UTF-8-complete piece of one choice's text. */
export const tokenEventDataSchema = z.object({
  index: z.number().int(),
  text: z.string(),
  logprob: tokenLogprobSchema.optional(),
})
export type TokenEventData = z.infer<typeof tokenEventDataSchema>

/** Data of a `failed` event, and a job record's error. */
export const failureSchema = z.object({ message: z.string(), code: z.string() })
