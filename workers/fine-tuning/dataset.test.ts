/** Fine-tuning data: assistant-only loss in chats, train/validation windows from two files, size errors. */
import { describe, expect, it } from 'vitest'
import { miniTokenizer } from '../../models/train/fixtures.js'
import { buildDataset, chatDoc, parseExamples, tokenizeExamples } from './dataset.js'

const { tok } = await miniTokenizer()

describe('chatDoc', () => {
  it('puts the loss on the assistant turns (with their end marker) and nowhere else', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Capital of Peru?' },
      { role: 'assistant', content: 'Lima.' },
      { role: 'user', content: 'And Kenya?' },
      { role: 'assistant', content: 'Nairobi.' },
    ]
    const doc = chatDoc(tok, messages)
    expect(doc.ids).toEqual(tok.applyChatTemplate(messages))
    const trained = doc.ids.filter((_, i) => doc.train![i])
    expect(tok.decode(trained)).toBe('Lima.<|im_end|>\nNairobi.<|im_end|>\n')
  })
})

describe('buildDataset', () => {
  const lines = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ prompt: `Q: number ${i}?\nA:`, completion: ` It is ${i}.` }),
    ).join('\n')

  it('takes training windows from the training file and validation windows from the validation file', () => {
    const train = tokenizeExamples(tok, parseExamples(lines(40)))
    const valid = tokenizeExamples(tok, parseExamples(lines(10)))
    const d = buildDataset(train, valid, { eos: tok.eosTokenId, seqLen: 16, seed: 1 })
    const trainTokens = train.reduce((a, x) => a + x.ids.length + 1, 0)
    expect(d.trainWindows.length).toBe(Math.floor((trainTokens - 1) / 16))
    expect(d.trainWindows.every((s) => s + 17 <= trainTokens)).toBe(true)
    expect(d.valWindows.length).toBeGreaterThan(0)
    expect(d.valWindows.every((s) => s >= trainTokens)).toBe(true)
    // Prompts carry no loss.
    expect([...d.packed.train].some((x) => x === 0)).toBe(true)
  })

  it('holds out part of the training file without a validation file, and refuses files that are too small', () => {
    const train = tokenizeExamples(tok, parseExamples(lines(40)))
    const d = buildDataset(train, null, { eos: tok.eosTokenId, seqLen: 16, seed: 1 })
    expect(d.valWindows.length).toBeGreaterThan(0)
    expect(d.trainWindows.length).toBeGreaterThan(d.valWindows.length)
    const tiny = tokenizeExamples(tok, parseExamples(lines(1)))
    expect(() => buildDataset(tiny, null, { eos: tok.eosTokenId, seqLen: 64, seed: 1 })).toThrow(
      /the training file has \d+ tokens/,
    )
    expect(() => buildDataset(train, tiny, { eos: tok.eosTokenId, seqLen: 64, seed: 1 })).toThrow(
      /the validation file has \d+ tokens/,
    )
  })
})
