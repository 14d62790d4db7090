/**
 * Fine-tuning data: assistant-only loss in chats (through the end-of-turn
 * marker, not the template's text after it), whole examples per training
 * row, train/validation rows from two files, size errors, trainable tokens.
 */
import { describe, expect, it } from 'vitest'
import { miniTokenizer } from '../../models/train/fixtures.js'
import { faqTrainingJsonl } from '../../test/fixtures/product-faq.js'
import {
  buildDataset,
  chatDoc,
  parseExamples,
  rowLength,
  tokenizeExamples,
  trainableTokensOf,
} from './dataset.js'

const { tok } = await miniTokenizer()
/** What prometheus-mini's generation stops on (generation_config.json): <|endoftext|> and <|im_end|>. */
const STOP = [tok.eosTokenId, tok.tokenToId('<|im_end|>')!]

describe('chatDoc', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Capital of Peru?' },
    { role: 'assistant', content: 'Lima.' },
    { role: 'user', content: 'And Kenya?' },
    { role: 'assistant', content: 'Nairobi.' },
  ]

  it('puts the loss on the assistant turns through their end-of-turn marker, and nowhere else', () => {
    const doc = chatDoc(tok, messages, STOP)
    expect(doc.ids).toEqual(tok.applyChatTemplate(messages))
    const trained = doc.ids.filter((_, i) => doc.train![i])
    // Not the newline ChatML writes after <|im_end|>: generation stops at the marker, and a
    // trained "\n" → next-turn pattern is what a chat prompt (ending "assistant\n") then continues.
    expect(tok.decode(trained)).toBe('Lima.<|im_end|>Nairobi.<|im_end|>')
  })

  it('a fine-tune file is tokenized with the stop ids: no assistant-turn loss after <|im_end|>', () => {
    const [doc] = tokenizeExamples(tok, parseExamples(JSON.stringify({ messages })), STOP)
    const last = doc.train!.lastIndexOf(true)
    expect(tok.decode([doc.ids[last]])).toBe('<|im_end|>')
    expect(doc.train!.slice(last + 1).every((x) => !x)).toBe(true)
  })
})

describe('buildDataset', () => {
  const lines = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ prompt: `Q: number ${i}?\nA:`, completion: ` It is ${i}.` }),
    ).join('\n')
  const o = { eos: tok.eosTokenId, pad: tok.padTokenId, seed: 1 }

  it('never cuts an example across rows: every answer is trained with its question in view', () => {
    const docs = tokenizeExamples(tok, parseExamples(faqTrainingJsonl(1)), STOP)
    // Chats of ~70 tokens: windows of a packed stream (the old layout) cut most of them.
    const d = buildDataset(docs, null, { ...o, maxSeqLen: 1024 })
    expect(d.seqLen).toBe(rowLength(docs, tok.eosTokenId, 1024))
    expect(d.seqLen % 8).toBe(0)
    const rows = [...d.trainWindows, ...d.valWindows]
    expect(rows.length).toBe(docs.length) // one chat per row: two do not fit in one
    for (const s of rows) {
      const row = [...d.packed.tokens.subarray(s, s + d.seqLen + 1)]
      const text = tok.decode(row)
      // Each row starts with its example's first token and holds its question and its answer.
      expect(text.startsWith('<|im_start|>system\n')).toBe(true)
      expect(text).toMatch(
        /<\|im_start\|>user\n[^<]+<\|im_end\|>\n<\|im_start\|>assistant\n[^<]+<\|im_end\|>/,
      )
    }
  })

  it('takes training rows from the training file and validation rows from the validation file', () => {
    const train = tokenizeExamples(tok, parseExamples(lines(40)))
    const valid = tokenizeExamples(tok, parseExamples(lines(10)))
    const d = buildDataset(train, valid, { ...o, maxSeqLen: 16 })
    expect(d.seqLen).toBe(16)
    const trainTokens = d.trainWindows.length * 17
    expect(d.trainWindows.every((s) => s + 17 <= trainTokens)).toBe(true)
    expect(d.valWindows.length).toBeGreaterThan(0)
    expect(d.valWindows.every((s) => s >= trainTokens)).toBe(true)
    // Prompts carry no loss.
    expect([...d.packed.train].some((x) => x === 0)).toBe(true)
    // Rows are sized to the examples: ~12 tokens each, so 16 (a multiple of 8) under a larger cap.
    expect(buildDataset(train, valid, { ...o, maxSeqLen: 1024 }).seqLen).toBe(16)
  })

  it('holds out part of the training file without a validation file, and refuses files with too little', () => {
    const train = tokenizeExamples(tok, parseExamples(lines(40)))
    const d = buildDataset(train, null, { ...o, maxSeqLen: 16 })
    expect(d.valWindows.length).toBeGreaterThan(0)
    expect(d.trainWindows.length).toBeGreaterThan(d.valWindows.length)
    const tiny = tokenizeExamples(tok, parseExamples(lines(1)))
    expect(() => buildDataset(tiny, null, { ...o, maxSeqLen: 64 })).toThrow(
      /the training file makes 1 training sequence .*without a validation file it needs at least 2/,
    )
    expect(buildDataset(train, tiny, { ...o, maxSeqLen: 64 }).valWindows).toHaveLength(1)
  })
})

describe('trainableTokensOf', () => {
  it('every token of the examples, ascending; the most frequent ones when capped', () => {
    const docs = [{ ids: [7, 3, 3, 9] }, { ids: [3, 9, 1] }]
    expect(trainableTokensOf(docs)).toEqual([1, 3, 7, 9])
    expect(trainableTokensOf(docs, 2)).toEqual([3, 9])
    const faq = tokenizeExamples(tok, parseExamples(faqTrainingJsonl(1)), STOP)
    const ids = trainableTokensOf(faq)
    expect(ids).toContain(tok.tokenToId('<|im_end|>'))
    expect(ids).toContain(tok.tokenToId('<|im_start|>'))
  })
})
