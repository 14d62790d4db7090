/**
 * JSONL files as the Files API accepts them (OpenAI's formats): pure functions
 * that split a file into lines, parse them, and check each line against the
 * file's purpose. Problems name the 1-based line number of the file, so an
 * upload's 400 says where to look. Blank lines are skipped; `\r\n` is fine.
 *
 * - `fine-tune`: every line is `{"messages":[…]}` (chat, at least one
 *   assistant message) or `{"prompt","completion"}`, one format per file.
 * - `batch`: every line is `{custom_id, method:'POST', url, body}` with url
 *   `/v1/chat/completions` or `/v1/completions` and unique custom_ids. The
 *   body is checked later, when a batch runs (a bad body fails one line).
 *
 * Reference: platform.openai.com/docs/guides/batch, /docs/guides/fine-tuning.
 */
import { z } from 'zod'
import { type ChatMessage, chatMessageSchema } from './protocol.js'

export interface JsonlLine {
  /** 1-based line number in the file. */
  line: number
  text: string
}

export interface LineProblem {
  line: number
  message: string
}

/** At most this many problems are collected per file (the first ones). */
export const MAX_PROBLEMS = 20

export class JsonlError extends Error {
  override readonly name = 'JsonlError'
  constructor(readonly problems: LineProblem[]) {
    super(describeProblems(problems))
  }
}

/** `line 3: … ; line 9: …` (the first five, then how many more). */
export function describeProblems(problems: readonly LineProblem[]): string {
  if (!problems.length) return 'no problems'
  const shown = problems.slice(0, 5).map((p) => (p.line > 0 ? `line ${p.line}: ${p.message}` : p.message))
  const more = problems.length > 5 ? `; and ${problems.length - 5} more` : ''
  return `${shown.join('; ')}${more}`
}

/** The non-blank lines of a file with their line numbers. */
export function splitJsonl(text: string): JsonlLine[] {
  const out: JsonlLine[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i]
    if (t.trim() !== '') out.push({ line: i + 1, text: t })
  }
  return out
}

/** One line as JSON, or the reason it is not a JSON object. */
export function parseJsonLine(
  text: string,
): { ok: true; value: Record<string, unknown> } | { ok: false; reason: string } {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: `invalid JSON (${(err as Error).message})` }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { ok: false, reason: 'each line must be a JSON object' }
  return { ok: true, value: value as Record<string, unknown> }
}

const issueText = (e: z.ZodError) => {
  const i = e.issues[0]
  if (!i) return 'invalid'
  const path = i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')
  return path ? `'${path.replace(/^\./, '')}': ${i.message}` : i.message
}

// ---- fine-tune ----

export type FineTuneExample =
  | { kind: 'chat'; messages: ChatMessage[] }
  | { kind: 'completion'; prompt: string; completion: string }

const chatExample = z.object({ messages: z.array(chatMessageSchema).min(1) })
const completionExample = z.object({ prompt: z.string(), completion: z.string().min(1) })

/** One fine-tune line, or why it is not one. */
export function checkFineTuneLine(
  value: Record<string, unknown>,
): { ok: true; example: FineTuneExample } | { ok: false; reason: string } {
  if ('messages' in value) {
    const r = chatExample.safeParse(value)
    if (!r.success) return { ok: false, reason: issueText(r.error) }
    if (!r.data.messages.some((m) => m.role === 'assistant'))
      return { ok: false, reason: 'messages must include at least one assistant message' }
    return { ok: true, example: { kind: 'chat', messages: r.data.messages } }
  }
  if ('prompt' in value || 'completion' in value) {
    const r = completionExample.safeParse(value)
    if (!r.success) return { ok: false, reason: issueText(r.error) }
    return { ok: true, example: { kind: 'completion', prompt: r.data.prompt, completion: r.data.completion } }
  }
  return { ok: false, reason: 'expected {"messages":[…]} or {"prompt","completion"}' }
}

/**
 * Every example of a fine-tune file, in order. Throws JsonlError naming the
 * bad lines (bad JSON, wrong shape, a format other than the first line's).
 */
export function parseFineTuneJsonl(text: string): FineTuneExample[] {
  const problems: LineProblem[] = []
  const out: FineTuneExample[] = []
  const lines = splitJsonl(text)
  if (!lines.length) throw new JsonlError([{ line: 0, message: 'the file has no lines' }])
  let format: FineTuneExample['kind'] | undefined
  for (const l of lines) {
    if (problems.length >= MAX_PROBLEMS) break
    const j = parseJsonLine(l.text)
    if (!j.ok) {
      problems.push({ line: l.line, message: j.reason })
      continue
    }
    const e = checkFineTuneLine(j.value)
    if (!e.ok) {
      problems.push({ line: l.line, message: e.reason })
      continue
    }
    format ??= e.example.kind
    if (e.example.kind !== format) {
      problems.push({ line: l.line, message: `a ${e.example.kind} example in a file of ${format} examples` })
      continue
    }
    out.push(e.example)
  }
  if (problems.length) throw new JsonlError(problems)
  return out
}

// ---- batch ----

export const BATCH_URLS = ['/v1/chat/completions', '/v1/completions'] as const
export type BatchUrl = (typeof BATCH_URLS)[number]

export interface BatchRequestLine {
  custom_id: string
  method: 'POST'
  url: BatchUrl
  body: Record<string, unknown>
}

const batchLine = z.object({
  custom_id: z.string().min(1).max(512),
  method: z.literal('POST'),
  url: z.enum(BATCH_URLS),
  body: z.record(z.string(), z.unknown()),
})

/** One batch request line's envelope (not its body), or why it is not one. */
export function checkBatchLine(
  value: Record<string, unknown>,
): { ok: true; request: BatchRequestLine } | { ok: false; reason: string } {
  const r = batchLine.safeParse(value)
  if (!r.success) return { ok: false, reason: issueText(r.error) }
  return { ok: true, request: r.data as BatchRequestLine }
}

/**
 * Every request of a batch input file, in order. Throws JsonlError naming the
 * bad lines (bad JSON, a bad envelope, a repeated custom_id).
 */
export function parseBatchJsonl(text: string): Array<BatchRequestLine & { line: number }> {
  const problems: LineProblem[] = []
  const out: Array<BatchRequestLine & { line: number }> = []
  const lines = splitJsonl(text)
  if (!lines.length) throw new JsonlError([{ line: 0, message: 'the file has no lines' }])
  const seen = new Map<string, number>()
  for (const l of lines) {
    if (problems.length >= MAX_PROBLEMS) break
    const j = parseJsonLine(l.text)
    if (!j.ok) {
      problems.push({ line: l.line, message: j.reason })
      continue
    }
    const r = checkBatchLine(j.value)
    if (!r.ok) {
      problems.push({ line: l.line, message: r.reason })
      continue
    }
    const first = seen.get(r.request.custom_id)
    if (first !== undefined) {
      problems.push({ line: l.line, message: `custom_id '${r.request.custom_id}' repeats line ${first}` })
      continue
    }
    seen.set(r.request.custom_id, l.line)
    out.push({ ...r.request, line: l.line })
  }
  if (problems.length) throw new JsonlError(problems)
  return out
}

/** Validates a file for a purpose; returns the problems (empty when fine) and the line count. */
export function validateJsonl(
  purpose: 'fine-tune' | 'batch',
  text: string,
): { problems: LineProblem[]; lines: number } {
  try {
    const lines = purpose === 'batch' ? parseBatchJsonl(text).length : parseFineTuneJsonl(text).length
    return { problems: [], lines }
  } catch (err) {
    if (err instanceof JsonlError) return { problems: err.problems, lines: 0 }
    throw err
  }
}
