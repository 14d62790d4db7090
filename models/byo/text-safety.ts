/**
 * Bounds on the text side of a tenant's model: the regular expressions a
 * `tokenizer.json` carries and the Jinja chat template. Both run on shared
 * event loops (the edge counts prompt tokens with the model's tokenizer, the
 * worker tokenizes and renders every request), so one tenant's pathological
 * pattern or template must not freeze everyone else's requests.
 *
 * Regexes. @huggingface/tokenizers compiles every `pattern: { Regex }` of a
 * normalizer, pre-tokenizer or decoder (Split, Replace) into a JS RegExp —
 * a backtracking engine. A pattern such as `(a+)+$` then takes exponential
 * time on a 30-character prompt. The check compiles each pattern exactly as
 * the library does (its own Split pre-tokenizer, so Oniguruma rewrites are
 * included) and analyses the resulting RegExp with scslre, a static
 * super-linear-backtracking analyser for JS RegExp (the one behind
 * eslint-plugin-regexp's no-super-linear-backtracking). Why not the others:
 * - a linear-time engine (re2js) refuses lookarounds, and the standard GPT-2 /
 *   Llama 3 / Qwen2 patterns end with `\s+(?!\S)`;
 * - recheck's pure-JS backend fuzzes (seconds per pattern, not deterministic,
 *   it passes `\s*\s*$`) and weighs megabytes in the edge bundle;
 * - safe-regex2 only measures star height, so it passes `(a|a)*$`.
 * Policy: refuse every exponential report, every report where two
 * quantifiers trade characters (cubic or worse in a search) and every report
 * whose quantifier repeats more than a single character (ambiguous groups
 * such as `(a|a)*`, which scslre reports as polynomial but backtrack
 * exponentially). What is left is a single-character quantifier followed by
 * a suffix that can fail (`\s*[\r\n]+` in Llama 3's pattern): at most
 * quadratic in a search, and the run-time side bounds the text it sees.
 *
 * Templates. @huggingface/jinja's interpreter is synchronous, so a template
 * cannot be interrupted from outside; renderChatTemplate runs it with a step
 * budget and an output budget instead, and `range()` refuses huge ranges
 * before allocating them.
 */
import { RegExpParser } from '@eslint-community/regexpp'
import { Environment, Interpreter, Template } from '@huggingface/jinja'
import * as tokenizers from '@huggingface/tokenizers'
import { analyse } from 'scslre'

type Json = Record<string, unknown>

// Both packages' .d.ts files import their own modules without extensions, which NodeNext resolution does not
// follow: the classes used here are typed by hand (their shapes: types/core/preTokenizer/Split.d.ts and
// dist/runtime.d.ts).
const { SplitPreTokenizer } = tokenizers as unknown as {
  SplitPreTokenizer: new (config: Json) => { pattern: RegExp | null }
}
type RuntimeValue = { type: string; value: unknown }
interface JinjaInterpreter {
  evaluate(node: unknown, env: unknown): RuntimeValue
  evaluateBlock(statements: unknown, env: unknown): RuntimeValue
  run(program: unknown): RuntimeValue
}

/** Where a pattern sits in tokenizer.json, e.g. `pre_tokenizer.pretokenizers[0].pattern.Regex`. */
export interface FoundPattern {
  location: string
  source: string
}

/** Every `pattern.Regex` in a tokenizer.json (normalizers, pre-tokenizers and decoders, nested Sequences included). */
export function tokenizerRegexes(tokenizerJson: Json): FoundPattern[] {
  const found: FoundPattern[] = []
  const walk = (node: unknown, at: string) => {
    if (Array.isArray(node)) {
      for (const [i, v] of node.entries()) walk(v, `${at}[${i}]`)
      return
    }
    if (!node || typeof node !== 'object') return
    for (const [k, v] of Object.entries(node as Json)) {
      const here = at ? `${at}.${k}` : k
      if (k === 'pattern' && v && typeof v === 'object' && 'Regex' in v)
        found.push({ location: `${here}.Regex`, source: String((v as Json).Regex) })
      // The vocabulary and merges are data, never patterns: skip them (they are most of the file).
      else if (!(at === 'model' && (k === 'vocab' || k === 'merges'))) walk(v, here)
    }
  }
  for (const key of ['normalizer', 'pre_tokenizer', 'decoder', 'post_processor', 'model'])
    walk((tokenizerJson as Json)[key], key)
  return found
}

/** The JS RegExp @huggingface/tokenizers runs for an Oniguruma `Regex` pattern (its own rewrite). */
function compileAsTokenizerDoes(source: string): RegExp | null {
  return new SplitPreTokenizer({
    type: 'Split',
    pattern: { Regex: source },
    behavior: 'Isolated',
    invert: false,
  }).pattern
}

const SINGLE_CHARACTER = new Set(['Character', 'CharacterClass', 'CharacterSet', 'ExpressionCharacterClass'])

/** Why a pattern is unsafe for a backtracking engine, or null when it is not. */
export function regexProblem(source: string): string | null {
  let re: RegExp | null
  try {
    re = compileAsTokenizerDoes(source)
  } catch (err) {
    return `does not compile (${err instanceof Error ? err.message : err})`
  }
  if (!re) return 'does not compile'
  let reports: ReturnType<typeof analyse>['reports']
  try {
    const literal = new RegExpParser().parseLiteral(`/${re.source}/${re.flags}`)
    reports = analyse(literal, { maxReports: 50 }).reports
  } catch (err) {
    return `cannot be analysed (${err instanceof Error ? err.message : err})`
  }
  for (const r of reports) {
    if (r.exponential)
      return `backtracks exponentially at '${r.type === 'Trade' ? r.startQuant.raw : r.quant.raw}'`
    if (r.type === 'Trade')
      return `backtracks polynomially ('${r.startQuant.raw}' and '${r.endQuant.raw}' trade characters)`
    if (!SINGLE_CHARACTER.has(r.quant.element.type))
      return `may backtrack exponentially at '${r.quant.raw}' (a repeated group whose alternatives overlap)`
  }
  return null
}

/** Problems of every regex in a tokenizer.json, each naming where it is. */
export function tokenizerRegexProblems(tokenizerJson: Json): string[] {
  const problems: string[] = []
  for (const p of tokenizerRegexes(tokenizerJson)) {
    const why = regexProblem(p.source)
    if (why)
      problems.push(
        `'tokenizer.json' ${p.location} ${JSON.stringify(p.source)} is not safe for a backtracking regex engine: it ${why}`,
      )
  }
  return problems
}

// ---- chat templates ----

/** Largest chat template accepted at publish (real ones are a few KiB; Llama 3.1's tool template is ~5). */
export const MAX_TEMPLATE_CHARS = 64 * 1024

export interface RenderBounds {
  /** Interpreter steps allowed: node evaluations, blocks run (loop iterations) and items of range(). */
  maxSteps: number
  /** Characters of the rendered prompt allowed; every string the template builds counts towards maxChars × 4. */
  maxChars: number
  /** Largest `range()` a template may ask for. */
  maxRange: number
}

export class TemplateBoundsError extends Error {
  override readonly name = 'TemplateBoundsError'
}

/** Bounds for a request: room for its messages several times over, and a fixed allowance for the template. */
export function requestBounds(inputChars: number): RenderBounds {
  return { maxSteps: 200_000 + inputChars * 4, maxChars: 1_000_000 + inputChars * 4, maxRange: 100_000 }
}

/**
 * An interpreter whose work counts against `bounds`: every node evaluation
 * and every block run (one per loop iteration, so empty loop bodies count
 * too) is a step; the interpreter's own calls go through `this.evaluate` and
 * `this.evaluateBlock`, so wrapping them on the instance sees them all.
 */
function boundedInterpreter(env: Environment, bounds: RenderBounds, count: () => void): JinjaInterpreter {
  const interpreter = new Interpreter(env) as unknown as JinjaInterpreter
  const evaluate = interpreter.evaluate.bind(interpreter)
  const evaluateBlock = interpreter.evaluateBlock.bind(interpreter)
  let built = 0
  interpreter.evaluate = (node, scope) => {
    count()
    const v = evaluate(node, scope)
    if (v.type === 'StringValue') {
      const n = (v.value as string).length
      built += n
      if (n > bounds.maxChars || built > bounds.maxChars * 4)
        throw new TemplateBoundsError(`the chat template produced more than ${bounds.maxChars} characters`)
    }
    return v
  }
  interpreter.evaluateBlock = (statements, scope) => {
    count()
    return evaluateBlock(statements, scope)
  }
  return interpreter
}

/**
 * Renders `template` as Template.render does (the same globals), within
 * `bounds`; throws TemplateBoundsError past them.
 */
export function renderChatTemplate(template: Template, items: Json, bounds: RenderBounds): string {
  const env = new Environment()
  let steps = 0
  const count = (n = 1) => {
    steps += n
    if (steps > bounds.maxSteps)
      throw new TemplateBoundsError(`the chat template took more than ${bounds.maxSteps} steps`)
  }
  const globals: Json = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    raise_exception: (message: unknown) => {
      throw new Error(String(message))
    },
    range: (start: number, stop?: number, step = 1) => {
      const [a, b] = stop === undefined ? [0, start] : [start, stop]
      if (step === 0) throw new Error('range() step must not be zero')
      const n = Math.max(0, Math.ceil((b - a) / step))
      if (n > bounds.maxRange)
        throw new TemplateBoundsError(`range() of ${n} items (at most ${bounds.maxRange})`)
      count(n)
      return Array.from({ length: n }, (_, i) => a + i * step)
    },
    strftime_now: (format: string) => strftime(new Date(), String(format)),
  }
  for (const [k, v] of Object.entries({ ...globals, ...items })) env.set(k, v)
  const out = boundedInterpreter(env, bounds, count).run(template.parsed)
  const text = String(out.value)
  if (text.length > bounds.maxChars)
    throw new TemplateBoundsError(`the chat template produced more than ${bounds.maxChars} characters`)
  return text
}

/** @huggingface/jinja's strftime_now directives (%Y %m %d %b %B %H %M %%); its own is not exported. */
function strftime(d: Date, format: string): string {
  const pad2 = (n: number) => String(n).padStart(2, '0')
  return format.replace(/%[YmdbBHM%]/g, (t) => {
    switch (t) {
      case '%Y':
        return String(d.getFullYear())
      case '%m':
        return pad2(d.getMonth() + 1)
      case '%d':
        return pad2(d.getDate())
      case '%b':
        return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(d)
      case '%B':
        return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(d)
      case '%H':
        return pad2(d.getHours())
      case '%M':
        return pad2(d.getMinutes())
      default:
        return '%'
    }
  })
}

/** The conversation a template must render at publish, within PUBLISH_BOUNDS. */
const PROBE_MESSAGES = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hello!' },
  { role: 'assistant', content: 'Hi! How can I help?' },
  { role: 'user', content: 'Tell me a joke.' },
]
const PUBLISH_BOUNDS: RenderBounds = { maxSteps: 200_000, maxChars: 100_000, maxRange: 10_000 }

/** Problems of a chat template at publish: too large, not parseable, or unbounded on a small conversation. */
export function chatTemplateProblems(
  source: string,
  where: string,
  specialTokens: Record<string, string>,
): string[] {
  if (source.length > MAX_TEMPLATE_CHARS)
    return [`the chat template (${where}) has ${source.length} characters, more than ${MAX_TEMPLATE_CHARS}`]
  let template: Template
  try {
    template = new Template(source)
  } catch (err) {
    return [`the chat template (${where}) does not parse: ${err instanceof Error ? err.message : err}`]
  }
  try {
    renderChatTemplate(
      template,
      { messages: PROBE_MESSAGES, add_generation_prompt: true, ...specialTokens },
      PUBLISH_BOUNDS,
    )
  } catch (err) {
    if (err instanceof TemplateBoundsError || err instanceof RangeError)
      return [
        `the chat template (${where}) is unbounded: rendering a four-message conversation, ${err.message}`,
      ]
    // Other failures (raise_exception on roles the template refuses, etc.) are the template's own rules.
  }
  return []
}
