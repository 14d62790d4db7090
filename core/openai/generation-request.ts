/**
 * An OpenAI generation request (completions, chat completions, a job's input,
 * a batch line) → the GenerationInput of core/protocol.ts. The edge maps
 * interactive requests and jobs with it, the batch workers each line of a
 * batch: one mapping, one set of defaults.
 */
import { ApiError, badRequest } from '../errors.js'
import type { ModelManifest } from '../model-manifest.js'
import { type ChatMessage, type GenerationInput, type Sampling, samplingSchema } from '../protocol.js'
import type { ModelCatalog } from '../records/model-catalog.js'
import type { ChatRequest, CompletionRequest } from './schemas.js'

type Fields = {
  max_tokens?: number | null
  temperature?: number | null
  top_p?: number | null
  top_k?: number | null
  n?: number | null
  stop?: string | string[] | null
  presence_penalty?: number | null
  frequency_penalty?: number | null
  repetition_penalty?: number | null
  seed?: number | null
}

export interface GenerationRequest {
  endpoint: GenerationInput['endpoint']
  model: string
  prompt?: string
  messages?: ChatMessage[]
  fields: Fields
  /** max_tokens as given (chat: max_completion_tokens wins). */
  maxTokens?: number | null
  /** Top alternatives per token, or null. */
  logprobs: number | null
  echo: boolean
  stream: boolean
}

export interface Prepared {
  input: GenerationInput
  manifest: ModelManifest
  promptTokens: number
  /** Tokens the request may use: prompt + max_tokens × n (the tokens-per-minute cost). */
  tokenBudget: number
}

/** Per-message overhead of a chat template (role markers), in tokens. */
export const CHAT_MESSAGE_OVERHEAD = 4
/** Default max_tokens of completions (as OpenAI); chat defaults to what fits, at most this. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16
export const CHAT_DEFAULT_MAX_TOKENS = 1024

const nn = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v)

/**
 * Checks a request against its model (visible to the tenant, fits the
 * context) and turns it into the GenerationInput a worker runs, with
 * OpenAI's defaults. The one mapping of every generation request: the
 * interactive routes, jobs and batch lines.
 */
export async function prepareGeneration(
  models: Pick<ModelCatalog, 'get' | 'tokenCounter'>,
  tenant: string,
  r: GenerationRequest,
): Promise<Prepared> {
  const manifest = await models.get(tenant, r.model)
  if (!manifest)
    throw new ApiError(404, `The model '${r.model}' does not exist or you do not have access to it.`, {
      param: 'model',
      code: 'model_not_found',
    })
  const counter = await models.tokenCounter(manifest)
  const ctx = manifest.context_length
  const promptParam = r.messages ? 'messages' : 'prompt'
  // Before tokenizing: a prompt of more characters than the context's tokens can cover (each
  // token stands for at most maxTokenChars characters) cannot fit, so it is refused without
  // spending the CPU to tokenize it (a 1 MB prompt took ~0.7 s). Tokenizing is then bounded by
  // context_length × maxTokenChars characters.
  const chars = r.messages ? r.messages.reduce((n, m) => n + m.content.length, 0) : (r.prompt ?? '').length
  const atLeast =
    Math.ceil(chars / counter.maxTokenChars) +
    (r.messages ? r.messages.length * CHAT_MESSAGE_OVERHEAD + 2 : 0)
  if (atLeast >= ctx)
    throw badRequest(
      `This model's maximum context length is ${ctx} tokens. However, your ${promptParam} has at least ${atLeast} tokens (${chars} characters).`,
      promptParam,
      'context_length_exceeded',
    )
  const promptTokens = r.messages
    ? r.messages.reduce((n, m) => n + counter.count(m.content) + CHAT_MESSAGE_OVERHEAD, 0) + 2
    : counter.count(r.prompt ?? '')
  const room = ctx - promptTokens
  if (room < 1)
    throw badRequest(
      `This model's maximum context length is ${ctx} tokens. However, your ${promptParam} has ${promptTokens} tokens.`,
      promptParam,
      'context_length_exceeded',
    )
  const requested = nn(r.maxTokens)
  const maxTokens =
    requested ??
    (r.endpoint === 'completions' ? COMPLETIONS_DEFAULT_MAX_TOKENS : Math.min(room, CHAT_DEFAULT_MAX_TOKENS))
  if (promptTokens + maxTokens > ctx)
    throw badRequest(
      `This model's maximum context length is ${ctx} tokens. However, you requested ${promptTokens + maxTokens} tokens ` +
        `(${promptTokens} in the ${promptParam}, ${maxTokens} in the completion). Please reduce the length of the ${promptParam} or the completion.`,
      r.messages ? 'messages' : 'max_tokens',
      'context_length_exceeded',
    )
  const f = r.fields
  const stop = f.stop == null ? [] : typeof f.stop === 'string' ? [f.stop] : f.stop
  const sampling: Sampling = samplingSchema.parse({
    maxTokens,
    temperature: nn(f.temperature),
    topP: nn(f.top_p),
    topK: nn(f.top_k),
    presencePenalty: nn(f.presence_penalty),
    frequencyPenalty: nn(f.frequency_penalty),
    repetitionPenalty: nn(f.repetition_penalty),
    seed: nn(f.seed),
    stop,
    n: nn(f.n),
    logprobs: r.logprobs,
  })
  const input: GenerationInput = {
    endpoint: r.endpoint,
    model: manifest.id,
    ...(r.messages ? { messages: r.messages } : { prompt: r.prompt ?? '' }),
    sampling,
    stream: r.stream,
    echo: r.echo,
  }
  return { input, manifest, promptTokens, tokenBudget: promptTokens + maxTokens * sampling.n }
}

/**
 * The request a job's `input` stands for: chat with `messages`, else a
 * completion of `prompt`. Streamed, since a job's events are readable at
 * /v1/jobs/{id}/stream.
 */
export function jobGeneration(
  model: string,
  i: Fields & { prompt?: string; messages?: ChatMessage[]; logprobs?: number | null; echo?: boolean | null },
): GenerationRequest {
  return {
    endpoint: i.messages ? 'chat.completions' : 'completions',
    model,
    ...(i.messages ? { messages: i.messages } : { prompt: i.prompt }),
    fields: i,
    maxTokens: i.max_tokens,
    logprobs: i.logprobs ?? null,
    echo: i.echo ?? false,
    stream: true,
  }
}

/** The request a completions body stands for (`prompt` as a string or a one-element list). */
export function completionGeneration(b: CompletionRequest): GenerationRequest {
  const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt[0]
  if (prompt === undefined) throw badRequest('prompt is required.', 'prompt')
  return {
    endpoint: 'completions',
    model: b.model,
    prompt,
    fields: b,
    maxTokens: b.max_tokens,
    logprobs: b.logprobs ?? null,
    echo: b.echo ?? false,
    stream: b.stream ?? false,
  }
}

/** The request a chat completions body stands for (max_completion_tokens wins over max_tokens). */
export function chatGeneration(b: ChatRequest): GenerationRequest {
  if (b.top_logprobs != null && !b.logprobs)
    throw badRequest('top_logprobs requires logprobs to be true.', 'top_logprobs')
  return {
    endpoint: 'chat.completions',
    model: b.model,
    messages: b.messages,
    fields: b,
    maxTokens: b.max_completion_tokens ?? b.max_tokens,
    logprobs: b.logprobs ? (b.top_logprobs ?? 0) : null,
    echo: false,
    stream: b.stream ?? false,
  }
}
