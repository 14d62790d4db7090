import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { saveTokenizer } from '../../models/index.js'
import { testTokenizer } from '../../test/helpers/tiny-models.js'
import { createRng } from './prng.js'
import { ByteStreamDetokenizer, IncrementalDetokenizer } from './text.js'
import { loadTokenizer, type ModelTokenizer } from './tokenizer.js'

let tok: ModelTokenizer
let vocabSize: number
beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgpt-tok-'))
  const files = testTokenizer()
  await saveTokenizer(dir, files)
  tok = await loadTokenizer(dir)
  vocabSize = Object.keys((files.tokenizer as { model: { vocab: object } }).model.vocab).length
})

describe('ModelTokenizer', () => {
  it('reads special tokens and the chat template', () => {
    expect(tok.plainByteLevel).toBe(true)
    expect(tok.hasChatTemplate).toBe(true)
    expect(tok.eosTokenIds).toHaveLength(1)
    expect(tok.isSpecial(tok.eosTokenIds[0])).toBe(true)
    expect(tok.decodeBytes(tok.eosTokenIds[0])).toHaveLength(0)
  })

  it('streams random id sequences to exactly decode(ids), with both detokenizers', () => {
    const rng = createRng(99)
    for (let trial = 0; trial < 200; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rng.next() * 12) }, () =>
        Math.floor(rng.next() * vocabSize),
      )
      const want = tok.decode(ids)
      const bytes = new ByteStreamDetokenizer((id) => tok.decodeBytes(id))
      const text = new IncrementalDetokenizer((x) => tok.decode(x))
      const a = ids.map((id) => bytes.push(id)).join('') + bytes.flush()
      const b = ids.map((id) => text.push(id)).join('') + text.flush()
      expect(a).toBe(want)
      expect(b).toBe(want)
    }
  })

  it('gives each token its bytes, partial characters included', () => {
    const ids = tok.encode('€')
    expect(ids.flatMap((id) => tok.tokenBytes(id))).toEqual([0xe2, 0x82, 0xac])
  })

  it('a chat template that renders without bound is cut off with a 400, quickly', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-tok-'))
    const files = testTokenizer()
    files.config = {
      ...files.config,
      chat_template:
        '{% for m in messages %}{% for i in range(100000) %}{{ m.content }}{% endfor %}{% endfor %}',
    }
    await saveTokenizer(dir, files)
    const t = await loadTokenizer(dir)
    const started = Date.now()
    let caught: unknown
    try {
      t.applyChatTemplate([{ role: 'user', content: 'x'.repeat(1000) }])
    } catch (err) {
      caught = err
    }
    expect(caught).toMatchObject({ status: 400, param: 'messages' })
    expect((caught as Error).message).toMatch(/^The chat template exceeded its bounds/)
    expect(Date.now() - started).toBeLessThan(5_000)
    // An ordinary conversation still renders.
    expect(tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toContain('hi')
  })

  it('a tokenizer whose split pattern backtracks exponentially is not loaded', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-tok-'))
    const files = testTokenizer()
    files.tokenizer = {
      ...files.tokenizer,
      pre_tokenizer: { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false },
    }
    await saveTokenizer(dir, files)
    await expect(loadTokenizer(dir)).rejects.toMatchObject({
      code: 'model_load_failed',
      message: expect.stringContaining('pre_tokenizer.pattern.Regex "(a+)+$"'),
    })
  })
})
