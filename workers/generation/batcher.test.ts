import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestModel } from '../../test/helpers/tiny-models.js'
import { Batcher, type BatchSequence, prefillInput } from './batcher.js'
import { Decoder } from './decoder.js'
import { argmax } from './sampling.js'

let decoder: Decoder
beforeAll(async () => {
  const model = await buildTestModel({ kind: 'random', seed: 11 })
  decoder = await Decoder.open(model.folder, { intraOpNumThreads: 1 })
})
afterAll(async () => {
  await decoder?.release()
})

/** Greedy for `length` tokens; records them. */
class Greedy implements BatchSequence {
  readonly tokens: number[] = []
  constructor(
    private readonly length: number,
    private readonly onStep?: (n: number) => void,
  ) {}
  step(logits: Float32Array) {
    const token = argmax(logits)
    this.tokens.push(token)
    this.onStep?.(this.tokens.length)
    return { token, done: this.tokens.length >= this.length }
  }
}

const prompt = (n: number, offset = 3) => Array.from({ length: n }, (_, i) => ((i * 7 + offset) % 250) + 3)

describe('Batcher', () => {
  it('never decodes more rows than maxBatchSize; results equal running alone', async () => {
    const alone: number[][] = []
    const solo = new Batcher(decoder, { model: 't', maxBatchSize: 1 })
    for (let i = 0; i < 5; i++) {
      const seq = new Greedy(6 + i)
      await solo.submit(prompt(3 + 4 * i, i), [seq])
      alone.push(seq.tokens)
    }
    expect(solo.maxBatchSeen).toBe(1)
    const batcher = new Batcher(decoder, { model: 't', maxBatchSize: 2 })
    const seqs = Array.from({ length: 5 }, (_, i) => new Greedy(6 + i))
    await Promise.all(seqs.map((s, i) => batcher.submit(prompt(3 + 4 * i, i), [s])))
    expect(seqs.map((s) => s.tokens)).toEqual(alone)
    expect(batcher.maxBatchSeen).toBe(2)
    expect(batcher.batchSize).toBe(0)
  })

  it.each([true, false])(
    'prefills prompts that arrive together in one padded run (batchPrefill %s)',
    async (batchPrefill) => {
      const alone: number[][] = []
      const solo = new Batcher(decoder, { model: 't', maxBatchSize: 1 })
      for (let i = 0; i < 4; i++) {
        const seq = new Greedy(6)
        await solo.submit(prompt(2 + 5 * i, i), [seq])
        alone.push(seq.tokens)
      }
      const batcher = new Batcher(decoder, { model: 't', batchPrefill })
      const forward = decoder.forward.bind(decoder)
      const prefills: number[] = []
      decoder.forward = (x) => {
        if (x.seq > 1) prefills.push(x.batch)
        return forward(x)
      }
      try {
        const seqs = Array.from({ length: 4 }, () => new Greedy(6))
        await Promise.all(seqs.map((s, i) => batcher.submit(prompt(2 + 5 * i, i), [s])))
        expect(seqs.map((s) => s.tokens)).toEqual(alone)
        expect(prefills).toEqual(batchPrefill ? [4] : [1, 1, 1, 1])
      } finally {
        decoder.forward = forward
      }
    },
  )

  it('left-pads a prefill group with per-row positions', () => {
    const x = prefillInput([[7, 8, 9], [5]])
    expect([x.batch, x.seq]).toEqual([2, 3])
    expect([...x.attentionMask]).toEqual([1n, 1n, 1n, 0n, 0n, 1n])
    expect([...x.positionIds]).toEqual([0n, 1n, 2n, 0n, 0n, 0n])
    expect(x.inputIds[5]).toBe(5n)
  })

  it('shares one prefill between the sequences of a request', async () => {
    const batcher = new Batcher(decoder, { model: 't' })
    const seqs = [new Greedy(5), new Greedy(8)]
    await batcher.submit(prompt(9), seqs)
    expect(seqs[1].tokens.slice(0, 5)).toEqual(seqs[0].tokens)
    expect(batcher.maxBatchSeen).toBe(2)
  })

  it('fails only the request whose sequence throws', async () => {
    const batcher = new Batcher(decoder, { model: 't' })
    const bad: BatchSequence = {
      step: () => {
        throw new Error('boom')
      },
    }
    const good = new Greedy(6)
    const results = await Promise.allSettled([
      batcher.submit(prompt(4), [bad]),
      batcher.submit(prompt(5), [good]),
    ])
    expect(results[0]).toMatchObject({ status: 'rejected', reason: { message: 'boom' } })
    expect(results[1].status).toBe('fulfilled')
    expect(good.tokens).toHaveLength(6)
  })

  it('cancels a waiting request at once and a running one between steps', async () => {
    const batcher = new Batcher(decoder, { model: 't', maxBatchSize: 1 })
    const running = new AbortController()
    const waiting = new AbortController()
    let steps = 0
    const first = batcher.submit(
      prompt(4),
      [
        new Greedy(1000, (n) => {
          steps = n
          if (n === 3) running.abort()
        }),
      ],
      running.signal,
    )
    const second = batcher.submit(prompt(4), [new Greedy(5)], waiting.signal)
    waiting.abort()
    await expect(second).rejects.toMatchObject({ code: 'cancelled' })
    await expect(first).rejects.toMatchObject({ code: 'cancelled' })
    expect(steps).toBe(3)
    expect(batcher.batchSize).toBe(0)
    // the batcher still serves
    const after = new Greedy(3)
    await batcher.submit(prompt(4), [after])
    expect(after.tokens).toHaveLength(3)
  })

  it('rejects what runs and waits on close', async () => {
    const batcher = new Batcher(decoder, { model: 't', maxBatchSize: 1 })
    const running = batcher.submit(prompt(4), [new Greedy(1000, (n) => n === 2 && batcher.close())])
    const waiting = batcher.submit(prompt(4), [new Greedy(5)])
    await expect(running).rejects.toThrow(/closed/)
    await expect(waiting).rejects.toThrow(/closed/)
    await expect(batcher.submit(prompt(2), [new Greedy(1)])).rejects.toThrow(/closed/)
  })

  it('validates its options', () => {
    expect(() => new Batcher(decoder, { model: 't', maxBatchSize: 0 })).toThrow(/maxBatchSize/)
    expect(() => new Batcher(decoder, { model: 't', maxWaitMs: -1 })).toThrow(/maxWaitMs/)
  })
})
