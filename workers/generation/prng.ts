/**
 * A small seeded PRNG per sequence (xoshiro128**, seeded through splitmix32),
 * so the same seed gives the same tokens whatever else runs in the batch.
 * References: Blackman & Vigna, "Scrambled linear pseudorandom number generators".
 */
import { createHash, randomInt } from 'node:crypto'

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number
}

function splitmix32(state: number): () => number {
  let s = state >>> 0
  return () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
}

/** A generator for `seed` (any safe integer) and `stream` (e.g. the choice index). */
export function createRng(seed: number, stream = 0): Rng {
  // Fold the high bits of a 53-bit seed into the state so large seeds differ.
  const hi = Math.floor(seed / 0x100000000) >>> 0
  const mix = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x27d4eb2d) ^ Math.imul(stream + 1, 0x165667b1))
  let a = mix()
  let b = mix()
  let c = mix()
  let d = mix()
  if ((a | b | c | d) === 0) a = 1
  return {
    next() {
      const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0
      const t = b << 9
      c ^= a
      d ^= b
      b ^= c
      a ^= d
      c ^= t
      d = rotl(d, 11)
      return result / 0x100000000
    },
  }
}

const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k))

/** A seed for requests that give none. */
export const randomSeed = () => randomInt(0, 2 ** 48 - 1)

/**
 * A seed derived from a job id, for requests that give none: a job run again
 * (redelivered after its worker was lost) samples the same tokens, so a
 * client that already streamed some of them sees the same text continue.
 * 48 bits, as randomSeed.
 */
export const seedOf = (jobId: string) => createHash('sha256').update(jobId).digest().readUIntBE(0, 6)
