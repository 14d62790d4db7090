import { describe, expect, it } from 'vitest'
import { chatRequest, completionRequest, samplingFields } from '../../core/openai/schemas.js'
import { SAMPLING_BOUNDS, samplingSchema } from '../../core/protocol.js'
import { createRng } from './prng.js'
import {
  applyProcessors,
  argmax,
  createLogitsProcessors,
  presenceFrequencyPenalty,
  repetitionPenalty,
  sampleToken,
  softmax,
  temperature,
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

  it('guards only the arithmetic of its factories (temperature divides, top-k indexes); request bounds are not theirs', () => {
    expect(() => temperature(0)).toThrow(RangeError)
    expect(() => topK(0)).toThrow(RangeError)
    expect(() => topK(1.5)).toThrow(RangeError)
    // p = 0 is out of the request bounds, but the nucleus still keeps the likeliest token.
    expect([...topP(0)([], Float32Array.of(3, 2, 1))].map(Number.isFinite)).toEqual([true, false, false])
  })
})

/**
 * The sampling bounds are defined once (core/protocol.ts SAMPLING_BOUNDS) and
 * checked once: the edge's request fields and the protocol schema the worker
 * parses a job's input with are built from them. Each row: the protocol
 * field, the request field, values inside (the edges of the range) and
 * outside.
 */
describe('sampling bounds', () => {
  const base = { maxTokens: 1 }
  const cases: Array<[keyof typeof samplingSchema.shape, string, unknown[], unknown[]]> = [
    [
      'maxTokens',
      'max_tokens',
      [1, SAMPLING_BOUNDS.maxTokens.max],
      [0, 1.5, SAMPLING_BOUNDS.maxTokens.max + 1],
    ],
    ['temperature', 'temperature', [0, 2], [-0.01, 2.01]],
    ['topP', 'top_p', [0.001, 1], [0, -1, 1.01]],
    ['topK', 'top_k', [0, 50], [-1, 1.5]],
    ['n', 'n', [1, 16], [0, 17, 1.5]],
    ['stop', 'stop', [[], ['a', 'b', 'c', 'd']], [['a', 'b', 'c', 'd', 'e'], ['']]],
    ['presencePenalty', 'presence_penalty', [-2, 2], [-2.01, 3]],
    ['frequencyPenalty', 'frequency_penalty', [-2, 2], [-3, 2.01]],
    ['repetitionPenalty', 'repetition_penalty', [0.01, 10], [0, 10.01]],
    ['logprobs', 'top_logprobs', [0, 20], [-1, 21, 1.5]],
  ]

  it.each(cases)('%s: the protocol schema keeps its bounds', (field, _request, inside, outside) => {
    for (const v of inside)
      expect(samplingSchema.safeParse({ ...base, [field]: v }).success, `${field}=${v}`).toBe(true)
    for (const v of outside) {
      const r = samplingSchema.safeParse({ ...base, [field]: v })
      expect(r.success, `${field}=${JSON.stringify(v)}`).toBe(false)
      expect(r.error?.issues[0]?.path[0]).toBe(field)
    }
  })

  it.each(cases)(
    '%s: the edge request field %s takes exactly what the protocol takes',
    (_field, request, inside, outside) => {
      const fields = { ...samplingFields, top_logprobs: chatRequest.shape.top_logprobs }
      const schema = fields[request as keyof typeof fields]
      for (const v of inside)
        expect(schema.safeParse(v).success, `${request}=${JSON.stringify(v)}`).toBe(true)
      for (const v of outside)
        expect(schema.safeParse(v).success, `${request}=${JSON.stringify(v)}`).toBe(false)
    },
  )

  it('completions logprobs and max_completion_tokens follow the same constant', () => {
    const logprobs = completionRequest.shape.logprobs
    expect(logprobs.safeParse(SAMPLING_BOUNDS.completionLogprobs.max).success).toBe(true)
    expect(logprobs.safeParse(SAMPLING_BOUNDS.completionLogprobs.max + 1).success).toBe(false)
    const mct = chatRequest.shape.max_completion_tokens
    expect(mct.safeParse(SAMPLING_BOUNDS.maxTokens.max).success).toBe(true)
    expect(mct.safeParse(SAMPLING_BOUNDS.maxTokens.max + 1).success).toBe(false)
  })

  it('a stop string is one sequence at the edge; the protocol holds a list', () => {
    expect(samplingFields.stop.safeParse('###').success).toBe(true)
    expect(samplingFields.stop.safeParse('').success).toBe(false)
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
