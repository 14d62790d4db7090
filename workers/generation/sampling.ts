/**
 * Logits processing and token selection. A logits processor is
 * `(ids, logits) => logits` (ids: the whole sequence so far, prompt first;
 * logits: one row over the vocabulary) and a list of them is a fold, as in
 * transformers.js `generation/logits_process.js`. Processors here work in
 * place (their helpers end in `_`) and return the same array.
 *
 * The parameters are trusted: a job's input parsed against core/protocol.ts
 * (whose SAMPLING_BOUNDS are the one definition of their bounds) before it
 * gets here, so nothing here validates them again. The sampler is chosen by
 * the config: greedy (argmax) at temperature 0, otherwise a multinomial draw
 * from a seeded PRNG per sequence.
 */
import type { Sampling } from '../../core/protocol.js'
import type { Rng } from './prng.js'

export type LogitsProcessor = (ids: readonly number[], logits: Float32Array) => Float32Array

export const applyProcessors = (
  processors: readonly LogitsProcessor[],
  ids: readonly number[],
  logits: Float32Array,
): Float32Array => processors.reduce((acc, p) => p(ids, acc), logits)

/** The parameters that shape the distribution (a subset of core/protocol.ts Sampling). */
export type SamplingParams = Pick<
  Sampling,
  'temperature' | 'topP' | 'topK' | 'presencePenalty' | 'frequencyPenalty' | 'repetitionPenalty'
>

/**
 * The processors for one sequence, in the order vLLM applies them:
 * penalties, then temperature, then top-k, then top-p.
 * `promptLength` separates prompt ids from generated ids (presence and
 * frequency penalties count generated tokens only, as OpenAI documents;
 * the repetition penalty counts both, as Hugging Face does).
 */
export function createLogitsProcessors(p: SamplingParams, promptLength: number): LogitsProcessor[] {
  const list: LogitsProcessor[] = []
  if (p.repetitionPenalty !== 1) list.push(repetitionPenalty(p.repetitionPenalty))
  if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0)
    list.push(presenceFrequencyPenalty(p.presencePenalty, p.frequencyPenalty, promptLength))
  // Greedy needs no warping: argmax is unchanged by temperature, top-k, top-p.
  if (p.temperature > 0) {
    if (p.temperature !== 1) list.push(temperature(p.temperature))
    if (p.topK > 0) list.push(topK(p.topK))
    if (p.topP < 1) list.push(topP(p.topP))
  }
  return list
}

/** Hugging Face's CTRL-style penalty: positive logits divided, negative ones multiplied. */
export function repetitionPenalty(penalty: number): LogitsProcessor {
  return (ids, logits) => {
    const seen = new Set(ids)
    for (const id of seen) {
      const v = logits[id]
      logits[id] = v > 0 ? v / penalty : v * penalty
    }
    return logits
  }
}

/** OpenAI's penalties: logit -= frequency * count + presence * (count > 0), over generated tokens. */
export function presenceFrequencyPenalty(
  presence: number,
  frequency: number,
  promptLength: number,
): LogitsProcessor {
  return (ids, logits) => {
    const counts = new Map<number, number>()
    for (let i = promptLength; i < ids.length; i++) counts.set(ids[i], (counts.get(ids[i]) ?? 0) + 1)
    for (const [id, count] of counts) logits[id] -= frequency * count + presence
    return logits
  }
}

/** Divides the logits by t. A precondition of the arithmetic, not a request bound: greedy (0) does not warp. */
export function temperature(t: number): LogitsProcessor {
  if (!(t > 0)) throw new RangeError(`temperature(t) divides by t: it needs t > 0 (got ${t}).`)
  const inv = 1 / t
  return (_ids, logits) => {
    for (let i = 0; i < logits.length; i++) logits[i] *= inv
    return logits
  }
}

/** Keeps the k largest logits (ties at the k-th value kept), the rest become -Infinity. */
export function topK(k: number): LogitsProcessor {
  // A precondition of the arithmetic (the k-th largest), not a request bound: top_k 0 (off) adds no processor.
  if (!(Number.isInteger(k) && k > 0)) throw new RangeError(`topK(k) needs a positive integer k (got ${k}).`)
  return (_ids, logits) => {
    if (k >= logits.length) return logits
    const kth = logits[topKIndices(logits, k)[k - 1]]
    for (let i = 0; i < logits.length; i++) if (logits[i] < kth) logits[i] = Number.NEGATIVE_INFINITY
    return logits
  }
}

/** Nucleus: keeps the smallest set of most likely tokens whose probability reaches p. */
export function topP(p: number): LogitsProcessor {
  return (_ids, logits) => {
    if (p >= 1) return logits
    const probs = softmax(logits)
    // Only tokens above a threshold can be in the nucleus; lower it until the candidates cover p.
    let max = 0
    for (let i = 0; i < probs.length; i++) if (probs[i] > max) max = probs[i]
    let threshold = max / 64
    let candidates: number[] = []
    for (;;) {
      candidates = []
      let mass = 0
      for (let i = 0; i < probs.length; i++) {
        if (probs[i] >= threshold) {
          candidates.push(i)
          mass += probs[i]
        }
      }
      if (mass >= p || threshold === 0) break
      threshold = threshold < 1e-12 ? 0 : threshold / 16
    }
    candidates.sort((a, b) => probs[b] - probs[a] || a - b)
    let cum = 0
    let cut = candidates.length
    for (let i = 0; i < candidates.length; i++) {
      cum += probs[candidates[i]]
      if (cum >= p) {
        cut = i + 1
        break
      }
    }
    const keep = new Uint8Array(logits.length)
    for (let i = 0; i < cut; i++) keep[candidates[i]] = 1
    for (let i = 0; i < logits.length; i++) if (!keep[i]) logits[i] = Number.NEGATIVE_INFINITY
    return logits
  }
}

/** Index of the largest value (the first one on ties). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0
  let bestValue = values[0]
  for (let i = 1; i < values.length; i++) {
    if (values[i] > bestValue) {
      bestValue = values[i]
      best = i
    }
  }
  return best
}

/** Probabilities (a new array); -Infinity logits get 0. */
export function softmax(logits: Float32Array): Float64Array {
  let max = Number.NEGATIVE_INFINITY
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i]
  const out = new Float64Array(logits.length)
  let sum = 0
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i] - max)
    out[i] = e
    sum += e
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum
  return out
}

/** log(sum(exp(logits))), stable. */
export function logSumExp(logits: Float32Array): number {
  let max = Number.NEGATIVE_INFINITY
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i]
  let sum = 0
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max)
  return max + Math.log(sum)
}

/** Indices of the k largest values, largest first (lower index first on ties); O(n log k). */
export function topKIndices(values: ArrayLike<number>, k: number): number[] {
  const n = Math.min(k, values.length)
  if (n <= 0) return []
  // Min-heap of indices by value; the root is the smallest kept (the latest index on ties).
  const heap: number[] = []
  const less = (a: number, b: number) => values[a] < values[b] || (values[a] === values[b] && a > b)
  const up = (i: number) => {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!less(heap[i], heap[parent])) break
      ;[heap[i], heap[parent]] = [heap[parent], heap[i]]
      i = parent
    }
  }
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < heap.length && less(heap[l], heap[m])) m = l
      if (r < heap.length && less(heap[r], heap[m])) m = r
      if (m === i) return
      ;[heap[i], heap[m]] = [heap[m], heap[i]]
      i = m
    }
  }
  for (let i = 0; i < values.length; i++) {
    if (heap.length < n) {
      heap.push(i)
      up(heap.length - 1)
    } else if (less(heap[0], i)) {
      heap[0] = i
      down(0)
    }
  }
  return heap.sort((a, b) => values[b] - values[a] || a - b)
}

/**
 * Picks the next token from processed logits: argmax when `rng` is null
 * (temperature 0), else a draw from softmax(logits).
 */
export function sampleToken(logits: Float32Array, rng: Rng | null): number {
  if (!rng) return argmax(logits)
  const probs = softmax(logits)
  const u = rng.next()
  let cum = 0
  let last = 0
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue
    cum += probs[i]
    last = i
    if (u < cum) return i
  }
  return last
}
