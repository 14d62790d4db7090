/**
 * A zod failure as an OpenAI 400 whose `param` names the field
 * (`messages[0].content`): the edge's request validation and the batch
 * workers' line checks give the same message for the same mistake.
 *
 * A field we do not implement — a key a strict object does not know (zod's
 * `unrecognized_keys`), or a value schemas.ts `defaultOnly` refuses — is
 * `unsupported_parameter` naming the field's path, as OpenAI answers
 * ("Unsupported parameter: 'x' ..."). It wins over any other issue of the
 * same request: it says what the client asked for and will not get.
 */
import type { ZodError } from 'zod'
import type { $ZodIssue } from 'zod/v4/core'
import { type ApiError, badRequest } from '../errors.js'

/** The error code of a field we do not implement; also the `params.code` of a custom zod issue that refuses one. */
export const UNSUPPORTED = 'unsupported_parameter'

type Unsupported = { paths: PropertyKey[][]; note?: string }

export function paramOf(path: ReadonlyArray<PropertyKey>): string | null {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p)
  return out || null
}

/**
 * The first unsupported field of the issues, as paths. Union failures are
 * searched too (their issues' paths are relative to the union): a content
 * list with an image part fails the string | parts union.
 */
function unsupported(issues: readonly $ZodIssue[], base: readonly PropertyKey[] = []): Unsupported | null {
  for (const i of issues) {
    const at = [...base, ...i.path]
    if (i.code === 'unrecognized_keys') return { paths: i.keys.map((k) => [...at, k]) }
    if (i.code === 'custom' && i.params?.code === UNSUPPORTED) return { paths: [at], note: i.message }
  }
  for (const i of issues) {
    if (i.code !== 'invalid_union') continue
    for (const option of i.errors) {
      const found = unsupported(option, [...base, ...i.path])
      if (found) return found
    }
  }
  return null
}

export function fromZod(error: ZodError, target: string): ApiError {
  const where = target === 'json' ? '' : ` (${target})`
  const found = unsupported(error.issues as $ZodIssue[])
  if (found) {
    const names = found.paths.map((f) => `'${paramOf(f)}'`)
    const note = found.note ? ` (${found.note})` : ''
    const message =
      names.length === 1
        ? `Unsupported parameter${where}: ${names[0]} is not supported by PrometheusGPT yet${note}.`
        : `Unsupported parameters${where}: ${names.join(', ')} are not supported by PrometheusGPT yet.`
    return badRequest(message, paramOf(found.paths[0] ?? []), UNSUPPORTED)
  }
  const issue = error.issues[0]
  if (!issue) return badRequest('Invalid request.')
  const param = paramOf(issue.path)
  const missing = issue.code === 'invalid_type' && /received undefined/.test(issue.message)
  // A missing parameter is said to be missing, not "expected string, received undefined".
  if (missing && param)
    return badRequest(`Missing required parameter '${param}'${where}.`, param, 'missing_required_parameter')
  const message = param
    ? `Invalid value for '${param}'${where}: ${issue.message}`
    : `Invalid request${where}: ${issue.message}`
  return badRequest(message, param, missing ? 'missing_required_parameter' : 'invalid_value')
}
