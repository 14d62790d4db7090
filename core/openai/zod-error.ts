/**
 * A zod failure as an OpenAI 400 whose `param` names the field
 * (`messages[0].content`): the edge's request validation and the batch
 * workers' line checks give the same message for the same mistake.
 */
import type { ZodError } from 'zod'
import { type ApiError, badRequest } from '../errors.js'

export function paramOf(path: ReadonlyArray<PropertyKey>): string | null {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p)
  return out || null
}

export function fromZod(error: ZodError, target: string): ApiError {
  const issue = error.issues[0]
  if (!issue) return badRequest('Invalid request.')
  const param = paramOf(issue.path)
  const where = target === 'json' ? '' : ` (${target})`
  const missing = issue.code === 'invalid_type' && /received undefined/.test(issue.message)
  // A missing parameter is said to be missing, not "expected string, received undefined".
  if (missing && param)
    return badRequest(`Missing required parameter '${param}'${where}.`, param, 'missing_required_parameter')
  const message = param
    ? `Invalid value for '${param}'${where}: ${issue.message}`
    : `Invalid request${where}: ${issue.message}`
  return badRequest(message, param, missing ? 'missing_required_parameter' : 'invalid_value')
}
