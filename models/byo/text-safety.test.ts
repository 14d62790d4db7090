import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Template } from '@huggingface/jinja'
import { describe, expect, it } from 'vitest'
import { MINI_DIR } from '../../test/helpers/byo-fixtures.js'
import {
  chatTemplateProblems,
  regexProblem,
  renderChatTemplate,
  requestBounds,
  TemplateBoundsError,
  tokenizerRegexes,
  tokenizerRegexProblems,
} from './text-safety.js'

const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
const LLAMA3 =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const O200K =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

describe('tokenizer regexes', () => {
  it('accepts the standard split patterns and simple ones', () => {
    for (const p of [GPT2, LLAMA3, O200K, '\\p{N}{1,3}', ' ', '▁', '\\s+', "(?i:'s|'t)"])
      expect(regexProblem(p), p).toBeNull()
  })

  it('refuses exponential, ambiguous-group and trading quantifiers', () => {
    expect(regexProblem('(a+)+$')).toMatch(/^backtracks exponentially/)
    expect(regexProblem('(\\w+\\s?)*$')).toMatch(/^backtracks exponentially/)
    expect(regexProblem('(a|a)*$')).toMatch(/^may backtrack exponentially at '\(a\|a\)\*'/)
    expect(regexProblem('\\s*\\s*$')).toMatch(/^backtracks polynomially/)
    expect(regexProblem('(unclosed')).toMatch(/^does not compile/)
  })

  it('finds patterns in normalizers, pre-tokenizers and decoders, nested Sequences included', () => {
    const t = {
      normalizer: {
        type: 'Sequence',
        normalizers: [{ type: 'Replace', pattern: { Regex: '(a+)+$' }, content: '' }],
      },
      pre_tokenizer: { type: 'Split', pattern: { String: '(a+)+$' }, behavior: 'Isolated' },
      decoder: { type: 'Replace', pattern: { Regex: '▁' }, content: ' ' },
      model: { type: 'BPE', vocab: { '(a+)+$': 0 }, merges: [] },
    }
    expect(tokenizerRegexes(t)).toEqual([
      { location: 'normalizer.normalizers[0].pattern.Regex', source: '(a+)+$' },
      { location: 'decoder.pattern.Regex', source: '▁' },
    ])
    expect(tokenizerRegexProblems(t)).toHaveLength(1)
  })

  it("prometheus-mini's tokenizer has nothing to refuse", async () => {
    const t = JSON.parse(await readFile(join(MINI_DIR, 'tokenizer.json'), 'utf8'))
    expect(tokenizerRegexProblems(t)).toEqual([])
  })
})

describe('chat templates', () => {
  it("prometheus-mini's template renders within the publish bounds, as Template.render does", async () => {
    const cfg = JSON.parse(await readFile(join(MINI_DIR, 'tokenizer_config.json'), 'utf8'))
    expect(chatTemplateProblems(cfg.chat_template, 'tokenizer_config.json', {})).toEqual([])
    const items = { messages: [{ role: 'user', content: 'hi' }], add_generation_prompt: true }
    const template = new Template(cfg.chat_template)
    expect(renderChatTemplate(template, items, requestBounds(2))).toBe(template.render(items))
  })

  it('stops a template past its step or output budget', () => {
    const loop = new Template(
      '{% for i in range(50000) %}{% for j in range(50000) %}{% endfor %}{% endfor %}',
    )
    expect(() =>
      renderChatTemplate(loop, {}, { maxSteps: 10_000, maxChars: 1000, maxRange: 100_000 }),
    ).toThrow(TemplateBoundsError)
    const big = new Template('{% for i in range(1000) %}{{ s }}{% endfor %}')
    expect(() =>
      renderChatTemplate(big, { s: 'x'.repeat(1000) }, { maxSteps: 1e6, maxChars: 10_000, maxRange: 1e5 }),
    ).toThrow(/more than 10000 characters/)
    expect(() =>
      renderChatTemplate(new Template('{{ range(10**9) | length }}'), {}, requestBounds(0)),
    ).toThrow(/range\(\) of 1000000000 items/)
  })
})
