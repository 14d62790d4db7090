/**
 * The tokens a batch will use, estimated when it is created, for the
 * enqueued-token limit (PGPT_BATCH_QUEUE_TOKENS, edge/routes/batches.ts), as
 * OpenAI's "batch queue limit". Per line: its prompt's tokens plus
 * `max_completion_tokens` / `max_tokens` (else the default prepareGeneration
 * would give: 16 for completions, what fits up to 1024 for chat) × `n`.
 *
 * Prompts are counted by the edge's character estimate (model-catalog.ts
 * `estimateTokens`, 4 characters a token, what the tokens-per-minute charge
 * uses for a model without a tokenizer), not by the model's tokenizer: a batch
 * file is up to 100 MB, a minute of edge CPU to tokenize. The model's context
 * length caps each part, as it caps the request (a prompt that does not fit
 * fails its line). A line that cannot run (bad JSON, an unknown model) counts
 * nothing: it fails at validation without generating.
 */
import { type BatchUrl, checkBatchLine, parseJsonLine, splitJsonl } from '../jsonl.js'
import { estimateTokens, type ModelCatalog } from '../records/model-catalog.js'
import {
  CHAT_DEFAULT_MAX_TOKENS,
  CHAT_MESSAGE_OVERHEAD,
  COMPLETIONS_DEFAULT_MAX_TOKENS,
} from './generation-request.js'

const count = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isInteger(v) && v >= 1 ? v : undefined

const textOf = (v: unknown): string => (typeof v === 'string' ? v : v == null ? '' : JSON.stringify(v))

function promptTokens(url: BatchUrl, body: Record<string, unknown>): number {
  if (url === '/v1/completions') {
    const p = body.prompt
    return estimateTokens(textOf(Array.isArray(p) && typeof p[0] === 'string' ? p[0] : p))
  }
  const messages = Array.isArray(body.messages) ? (body.messages as Array<{ content?: unknown }>) : []
  return messages.reduce((n, m) => n + estimateTokens(textOf(m?.content)) + CHAT_MESSAGE_OVERHEAD, 2)
}

/** The estimated tokens of one request line; 0 when it cannot run. */
export function estimateLineTokens(
  url: BatchUrl,
  body: Record<string, unknown>,
  contextLength: number,
): number {
  const prompt = Math.min(promptTokens(url, body), contextLength)
  const completions = url === '/v1/completions'
  const max =
    (completions ? undefined : count(body.max_completion_tokens)) ??
    count(body.max_tokens) ??
    (completions
      ? COMPLETIONS_DEFAULT_MAX_TOKENS
      : Math.min(Math.max(contextLength - prompt, 0), CHAT_DEFAULT_MAX_TOKENS))
  return prompt + Math.min(max, contextLength) * (count(body.n) ?? 1)
}

/** The estimated tokens of a batch input file's lines whose url is `endpoint`. */
export async function estimateBatchTokens(
  models: Pick<ModelCatalog, 'get'>,
  tenant: string,
  endpoint: BatchUrl,
  text: string,
): Promise<number> {
  const contexts = new Map<string, Promise<number | null>>()
  const contextOf = (model: string) => {
    let c = contexts.get(model)
    if (!c) {
      c = models.get(tenant, model).then((m) => m?.context_length ?? null)
      contexts.set(model, c)
    }
    return c
  }
  let total = 0
  for (const l of splitJsonl(text)) {
    const j = parseJsonLine(l.text)
    const r = j.ok ? checkBatchLine(j.value) : null
    if (!r?.ok || r.request.url !== endpoint) continue
    const model = r.request.body.model
    const ctx = typeof model === 'string' ? await contextOf(model) : null
    if (ctx !== null) total += estimateLineTokens(endpoint, r.request.body, ctx)
  }
  return total
}
