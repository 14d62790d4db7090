import { describe, expect, it } from 'vitest'
import {
  BatchSchedule,
  makeBatch,
  pack,
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
