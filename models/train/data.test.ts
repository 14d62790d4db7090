import { describe, expect, it } from 'vitest'
import {
  BatchSchedule,
  exampleTokens,
  makeBatch,
  pack,
  packRows,
  splitDataset,
  tokenizeRecord,
  unigramEntropy,
  valBatches,
} from './data.js'
import { miniTokenizer } from './fixtures.js'
import { IGNORE_INDEX } from './loss.js'

const stream = (n: number) => pack([{ ids: Array.from({ length: n }, (_, i) => 10 + i) }], 0)

describe('data', () => {
  it('masks the prompt of prompt/completion records and trains the EOS', async () => {
    const { tok } = await miniTokenizer()
    const doc = tokenizeRecord(tok, { prompt: 'Q: capital of Peru?\nA:', completion: ' Lima.' })
    const p = pack([doc], tok.eosTokenId)
    const nPrompt = tok.encode('Q: capital of Peru?\nA:').length
    expect([...p.train]).toEqual([...Array(nPrompt).fill(0), ...Array(p.train.length - nPrompt).fill(1)])
    expect(p.tokens.at(-1)).toBe(tok.eosTokenId)
    const d = splitDataset(p, p.tokens.length - 1, 0, 0)
    const b = makeBatch(d, [0])
    // Targets are the next tokens, ignored where the target is a prompt token.
    for (let t = 0; t < d.seqLen; t++)
      expect(Number(b.targets[t])).toBe(t + 1 < nPrompt ? IGNORE_INDEX : p.tokens[t + 1])
  })

  it('does not train the EOS after a document whose tail has no loss (a chat after its last end-of-turn)', () => {
    // A chat's loss ends at its end-of-turn marker (7); the template's newline after it (8) has none.
    const chat = { ids: [1, 5, 6, 7, 8], train: [false, false, true, true, false] }
    const completion = { ids: [1, 5, 6], train: [false, true, true] }
    const p = pack([chat, completion], 0)
    expect([...p.tokens]).toEqual([1, 5, 6, 7, 8, 0, 1, 5, 6, 0])
    // The EOS after the chat has no loss; the one after a completion ends it, with a loss.
    expect([...p.train]).toEqual([0, 0, 1, 1, 0, 0, 0, 1, 1, 1])
    expect(exampleTokens(chat, 0)).toEqual({ tokens: [1, 5, 6, 7], train: [false, false, true, true] })
  })

  it('packRows keeps every example whole in one row (several short ones per row), pads with no loss', () => {
    const doc = (n: number, first: number) => ({
      ids: Array.from({ length: n }, (_, i) => first + i),
      train: Array.from({ length: n }, (_, i) => i >= n / 2),
    })
    // Rows of 9 tokens (seqLen 8); examples of 4+1, 4+1, 6+1 and 12+1 tokens (with their EOS).
    const docs = [doc(4, 10), doc(4, 20), doc(6, 30), doc(12, 40)]
    const { packed, starts } = packRows(docs, { eos: 0, pad: 3, seqLen: 8 })
    const rows = starts.map((s) => [...packed.tokens.subarray(s, s + 9)])
    expect(rows).toEqual([
      [10, 11, 12, 13, 0, 3, 3, 3, 3], // the second example does not fit after the first: no cut
      [20, 21, 22, 23, 0, 3, 3, 3, 3],
      [30, 31, 32, 33, 34, 35, 0, 3, 3],
      [40, 41, 42, 43, 44, 45, 46, 47, 48], // longer than a row: consecutive windows, as pack's
      [48, 49, 50, 51, 0, 3, 3, 3, 3],
    ])
    const train = starts.map((s) => [...packed.train.subarray(s, s + 9)])
    expect(train[0]).toEqual([0, 0, 1, 1, 1, 0, 0, 0, 0])
    // Two short examples share a row.
    const two = packRows([doc(2, 10), doc(2, 20), doc(2, 30)], { eos: 0, pad: 3, seqLen: 8 })
    expect([...two.packed.tokens]).toEqual([10, 11, 0, 20, 21, 0, 30, 31, 0])
    expect(two.starts).toEqual([0])
  })

  it('splits windows deterministically and disjointly', () => {
    const a = splitDataset(stream(1000), 9, 0.2, 4)
    const b = splitDataset(stream(1000), 9, 0.2, 4)
    expect(a.valWindows).toEqual(b.valWindows)
    expect(a.valWindows.length).toBeGreaterThan(0)
    expect(a.trainWindows.filter((s) => a.valWindows.includes(s))).toEqual([])
    expect(a.trainWindows.length + a.valWindows.length).toBe(Math.floor((1001 - 1) / 9))
    expect(() => splitDataset(stream(5), 9, 0.1, 0)).toThrow(/too few windows/)
  })

  it('visits every train window once per epoch, in a seeded order', () => {
    const d = splitDataset(stream(400), 9, 0.1, 1)
    const s = new BatchSchedule(d.trainWindows, 4, 7)
    const n = d.trainWindows.length
    const epoch = Array.from({ length: Math.ceil(n / 4) }, (_, i) => s.starts(i))
      .flat()
      .slice(0, n)
    expect([...epoch].sort((x, y) => x - y)).toEqual([...d.trainWindows].sort((x, y) => x - y))
    expect(new BatchSchedule(d.trainWindows, 4, 7).starts(3)).toEqual(s.starts(3))
    expect(new BatchSchedule(d.trainWindows, 4, 8).starts(0)).not.toEqual(s.starts(0))
  })

  it('pads the last validation batch with rows that have no loss', () => {
    const d = splitDataset(stream(400), 9, 0.3, 1)
    const batches = [...valBatches(d, 4)]
    expect(batches).toHaveLength(Math.ceil(d.valWindows.length / 4))
    const counted = batches.flatMap((b) => [...b.targets]).filter((t) => t !== BigInt(IGNORE_INDEX)).length
    expect(counted).toBe(d.valWindows.length * 9)
  })

  it('unigram entropy is ln(k) for k equally frequent tokens', () => {
    expect(unigramEntropy(Int32Array.from([1, 2, 3, 4, 1, 2, 3, 4]))).toBeCloseTo(Math.log(4), 10)
    expect(unigramEntropy(Int32Array.from([5, 5, 5]))).toBe(0)
  })
})
