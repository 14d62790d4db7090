import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { BpeTrainer, bytesToUnicode } from './bpe.js'
import { createTokenizer, loadTokenizer, SPECIAL_TOKENS, saveTokenizer, trainTokenizer } from './tokenizer.js'

const MINI = join(dirname(fileURLToPath(import.meta.url)), '..', 'prometheus-mini')

const SAMPLES: [string, string][] = [
  ['English', 'The Congress shall have Power To lay and collect Taxes, Duties, Imposts and Excises.'],
  ['Russian', 'Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка!'],
  ['emoji', 'Fire 🔥, family 👨‍👩‍👧‍👦, flags 🇺🇦🇯🇵, skin tones 👍🏽 and ZWJ ❤️‍🔥'],
  [
    'source code',
    'export function f<T>(xs: T[]): number {\n\treturn xs.reduce((a, _) => a + 1, 0) // ok\n}\n',
  ],
  ['runs of whitespace', '  two  spaces,\ttab\t\t, lines\n\n\n\r\n   trailing   \u00a0nbsp\u2003em '],
  ['mixed scripts and symbols', '数学 ∑∫√ — “quotes” ‘single’ … naïve café ﬁ  \u0000\u0007 end'],
]

describe('byte-level BPE trainer', () => {
  it('maps all 256 bytes to distinct printable characters (GPT-2 table)', () => {
    const table = bytesToUnicode()
    expect(new Set(table).size).toBe(256)
    expect(table[32]).toBe('Ġ') // space
    expect(table[10]).toBe('Ċ') // newline
    expect(table[65]).toBe('A')
  })

  it('merges the most frequent pair first (the classic aaabdaaabac example)', () => {
    const t = new BpeTrainer()
    t.add('aaabdaaabac')
    const { merges, vocab } = t.train({ vocabSize: 259, minFrequency: 1 })
    expect(merges).toEqual([
      ['a', 'a'],
      ['a', 'b'], // ties with (aa, a) at 2; the smaller ids win, as in huggingface/tokenizers
      ['aa', 'ab'],
    ])
    expect(vocab.get('aaab')).toBe(258)
  })

  it('stops at the vocab size and is deterministic', () => {
    const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'the', 'sta', 'pe', 'qu', 'zo']
    const words = Array.from(
      { length: 3000 },
      (_, i) => syllables[i % 10] + syllables[(i * 7) % 9] + syllables[(i * 3) % 8],
    )
    const text = `the ${words.join(' ')} the end`
    const a = trainTokenizer([text], { vocabSize: 300 })
    const b = trainTokenizer([text], { vocabSize: 300 })
    expect(a).toEqual(b)
    const vocab = (a.tokenizer as { model: { vocab: Record<string, number> } }).model.vocab
    expect(Object.keys(vocab)).toHaveLength(300)
    expect(Object.values(vocab).sort((x, y) => x - y)).toEqual([...Array(300).keys()])
    expect(vocab).toHaveProperty('Ġthe')
  })

  it('stops early when no pair reaches minFrequency', () => {
    const files = trainTokenizer(['abc abd'], { vocabSize: 1000, minFrequency: 2 })
    const { vocab, merges } = (files.tokenizer as { model: { vocab: object; merges: string[][] } }).model
    expect(merges).toEqual([['a', 'b']]) // the only pair seen twice ('abc' and 'Ġabd')
    expect(Object.keys(vocab)).toHaveLength(3 + 256 + 1)
  })
})

describe('tokenizer (trained, loaded through @huggingface/tokenizers)', async () => {
  const tok = await loadTokenizer(MINI)

  it.each(SAMPLES)('round-trips %s losslessly', (_, text) => {
    const ids = tok.encode(text)
    expect(tok.decode(ids)).toBe(text)
    expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize)).toBe(true)
  })

  it('compresses English from its training corpus well below one token per byte', () => {
    const text = SAMPLES[0][1]
    expect(tok.encode(text).length).toBeLessThan(Buffer.byteLength(text) / 3)
  })

  it('has the special tokens as single ids and skips them on request', () => {
    expect(tok.vocabSize).toBe(4096)
    expect(SPECIAL_TOKENS.map((t) => tok.tokenToId(t))).toEqual([0, 1, 2])
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([0, 0, 0])
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|><|endoftext|>')
    expect(ids[0]).toBe(1)
    expect(ids.slice(-2)).toEqual([2, 0])
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('user\nhi')
  })

  it('renders the ChatML chat template with @huggingface/jinja', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Привет 👋' },
    ]
    const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true, tokenize: false })
    expect(text).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nПривет 👋<|im_end|>\n<|im_start|>assistant\n',
    )
    const ids = tok.applyChatTemplate(messages, { addGenerationPrompt: true })
    expect(tok.decode(ids)).toBe(text)
    expect(ids.filter((id) => id === 1)).toHaveLength(3)
    expect(tok.applyChatTemplate(messages, { tokenize: false }).endsWith('<|im_end|>\n')).toBe(true)
  })

  it('saves and reloads a freshly trained tokenizer with identical encodings', async () => {
    const files = trainTokenizer(
      SAMPLES.map(([, t]) => t),
      { vocabSize: 320, minFrequency: 1 },
    )
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-tok-'))
    await saveTokenizer(dir, files)
    const a = createTokenizer(files)
    const b = await loadTokenizer(dir)
    for (const [, text] of SAMPLES) {
      expect(b.encode(text)).toEqual(a.encode(text))
      expect(b.decode(b.encode(text))).toBe(text)
    }
  })
})
