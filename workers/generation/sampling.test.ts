import { describe, expect, it } from 'vitest'
import { ApiError } from '../../core/errors.js'
import { createRng } from './prng.js'
import {
  applyProcessors,
  argmax,
  createLogitsProcessors,
  presenceFrequencyPenalty,
  repetitionPenalty,
  sampleToken,
  softmax,
  topK,
  topKIndices,
  topP,
} from './sampling.js'

const defaults = {
  temperature: 1,
  topP: 1,
  topK: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
}

describe('prng', () => {
  it('is reproducible per seed and stream, different across them, uniform in [0,1)', () => {
    const a = createRng(42)
    const b = createRng(42)
    const seqA = Array.from({ length: 5 }, () => a.next())
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(seqA)
    const c = createRng(42, 1)
    expect(Array.from({ length: 5 }, () => c.next())).not.toEqual(seqA)
    const d = createRng(43)
    expect(Array.from({ length: 5 }, () => d.next())).not.toEqual(seqA)
    const r = createRng(7)
    let sum = 0
    for (let i = 0; i < 10_000; i++) {
      const x = r.next()
      expect(x >= 0 && x < 1).toBe(true)
      sum += x
    }
    expect(sum / 10_000).toBeGreaterThan(0.48)
    expect(sum / 10_000).toBeLessThan(0.52)
  })
})

describe('logits processors', () => {
  it('applies the repetition penalty like Hugging Face', () => {
    const out = repetitionPenalty(2)([0, 1, 1], Float32Array.of(4, -4, 3))
    expect([...out]).toEqual([2, -8, 3])
  })

  it('applies presence and frequency penalties to generated tokens only', () => {
    // prompt [2], generated [0, 0, 1]
    const out = presenceFrequencyPenalty(0.5, 1, 1)([2, 0, 0, 1], Float32Array.of(10, 10, 10))
    expect([...out]).toEqual([10 - 2 - 0.5, 10 - 1 - 0.5, 10])
  })

  it('keeps the top k and the nucleus', () => {
    expect([...topK(2)([], Float32Array.of(1, 5, 3, 2))]).toEqual([-Infinity, 5, 3, -Infinity])
    // probs ~ [0.64, 0.24, 0.09, 0.03]: p=0.7 keeps two tokens, p=0.5 one
    const logits = () => Float32Array.of(3, 2, 1, 0)
    expect([...topP(0.7)([], logits())].map(Number.isFinite)).toEqual([true, true, false, false])
    expect([...topP(0.5)([], logits())].map(Number.isFinite)).toEqual([true, false, false, false])
  })

  it('folds the list in order and leaves greedy logits unwarped', () => {
    const ps = createLogitsProcessors({ ...defaults, temperature: 0.5, topK: 1 }, 0)
    const out = applyProcessors(ps, [], Float32Array.of(1, 2))
    expect([...out]).toEqual([-Infinity, 4])
    expect(createLogitsProcessors({ ...defaults, temperature: 0, topK: 3 }, 0)).toHaveLength(0)
  })

  it.each([
    [{ temperature: -1 }, 'temperature'],
    [{ topP: 0 }, 'top_p'],
    [{ topK: 1.5 }, 'top_k'],
    [{ presencePenalty: 3 }, 'presence_penalty'],
    [{ repetitionPenalty: 0 }, 'repetition_penalty'],
  ])('rejects %o with a typed 400 error', (bad, param) => {
    try {
      createLogitsProcessors({ ...defaults, ...bad }, 0)
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(ApiError)
      expect((err as ApiError).status).toBe(400)
      expect((err as ApiError).param).toBe(param)
      expect((err as ApiError).code).toBe('invalid_parameter')
    }
  })
})

describe('selection', () => {
  it('finds argmax and top-k indices with ties in index order', () => {
    const v = Float32Array.of(1, 9, 3, 9, -2, 7)
    expect(argmax(v)).toBe(1)
    expect(topKIndices(v, 3)).toEqual([1, 3, 5])
    expect(topKIndices(v, 10)).toEqual([1, 3, 5, 2, 0, 4])
  })

  it('samples from the distribution with a seeded rng', () => {
    const logits = Float32Array.of(Math.log(0.7), Math.log(0.2), Math.log(0.1))
    const rng = createRng(1)
    const counts = [0, 0, 0]
    for (let i = 0; i < 20_000; i++) counts[sampleToken(logits, rng)]++
    expect(counts[0] / 20_000).toBeCloseTo(0.7, 1)
    expect(counts[1] / 20_000).toBeCloseTo(0.2, 1)
    expect(counts[2] / 20_000).toBeCloseTo(0.1, 1)
    expect(sampleToken(Float32Array.of(0, 5, 1), null)).toBe(1)
    expect(sampleToken(Float32Array.of(-Infinity, 0, -Infinity), createRng(3))).toBe(1)
    expect([...softmax(Float32Array.of(0, 0))]).toEqual([0.5, 0.5])
  })
})
