/**
 * One batch line → the generation input a worker runs, with the same checks
 * and defaults as the interactive routes: the body is parsed with the
 * routes' own schemas (core/openai/schemas.ts) and turned into a
 * GenerationInput by the same `prepareGeneration` (model visible to the
 * tenant, context length, default max_tokens, sampling). A line that fails
 * gets the reason an interactive request would get as a 4xx, with its param
 * (an unsupported field is `unsupported_parameter` naming it, as OpenAI's
 * per-line errors do).
 */
import { ApiError } from '../../core/errors.js'
import { type BatchRequestLine, type BatchUrl, checkBatchLine, parseJsonLine } from '../../core/jsonl.js'
import {
  chatGeneration,
  completionGeneration,
  type GenerationRequest,
  prepareGeneration,
} from '../../core/openai/generation-request.js'
import { chatRequest, completionRequest } from '../../core/openai/schemas.js'
import { fromZod } from '../../core/openai/zod-error.js'
import type { GenerationInput } from '../../core/protocol.js'
import type { ModelCatalog } from '../../core/records/model-catalog.js'

export type LineCheck =
  | { ok: true; request: BatchRequestLine; input: GenerationInput }
  | {
      ok: false
      custom_id: string | null
      /** 'line': the line itself is malformed (error file's `error`); 'body': the request is invalid (a 4xx `response`). */
      stage: 'line' | 'body'
      status: number
      code: string
      message: string
      /** The field at fault (`messages[1].tool_calls`), as a request's error names it. */
      param: string | null
    }

const fail = (
  custom_id: string | null,
  status: number,
  code: string,
  message: string,
  param: string | null = null,
): LineCheck => ({
  ok: false,
  custom_id,
  stage:
    code === 'invalid_json' ||
    code === 'invalid_request' ||
    code === 'duplicate_custom_id' ||
    code === 'invalid_url'
      ? 'line'
      : 'body',
  status,
  code,
  message,
  param,
})

/** The interactive request a body stands for (as edge/routes/completions.ts maps it). */
export function toGenerationRequest(url: BatchUrl, body: Record<string, unknown>): GenerationRequest {
  if (url === '/v1/completions') {
    const parsed = completionRequest.safeParse(body)
    if (!parsed.success) throw fromZod(parsed.error, 'json')
    return { ...completionGeneration(parsed.data), stream: false }
  }
  const parsed = chatRequest.safeParse(body)
  if (!parsed.success) throw fromZod(parsed.error, 'json')
  return { ...chatGeneration(parsed.data), stream: false }
}

/**
 * Checks one line of a batch whose endpoint is `endpoint`. `seen` collects
 * custom_ids: a repeated one fails (the first stands).
 */
export async function checkLine(
  models: ModelCatalog,
  tenant: string,
  endpoint: BatchUrl,
  text: string,
  seen: Set<string>,
): Promise<LineCheck> {
  const j = parseJsonLine(text)
  if (!j.ok) return fail(null, 400, 'invalid_json', j.reason)
  const customId = typeof j.value.custom_id === 'string' ? j.value.custom_id : null
  const env = checkBatchLine(j.value)
  if (!env.ok) return fail(customId, 400, 'invalid_request', env.reason)
  const r = env.request
  if (seen.has(r.custom_id))
    return fail(null, 400, 'duplicate_custom_id', `custom_id '${r.custom_id}' repeats an earlier line`)
  seen.add(r.custom_id)
  if (r.url !== endpoint)
    return fail(
      r.custom_id,
      400,
      'invalid_url',
      `url ${r.url} does not match the batch's endpoint ${endpoint}`,
    )
  try {
    const g = toGenerationRequest(r.url, r.body)
    const prep = await prepareGeneration(models, tenant, g)
    return { ok: true, request: r, input: prep.input }
  } catch (err) {
    if (err instanceof ApiError && err.status < 500)
      return fail(r.custom_id, err.status, err.code ?? 'invalid_body', err.message, err.param)
    throw err
  }
}
