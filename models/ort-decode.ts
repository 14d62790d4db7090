/**
 * Test support: run an exported decoder with onnxruntime-node, feed the KV
 * cache step by step, and a small greedy loop. Not the production generation
 * engine (that lives in workers/); this is the "ours" side of the tests.
 */
import * as ort from 'onnxruntime-node'
import type { LlamaConfig } from './config.js'
import { headDim } from './config.js'
import { fromHalf } from './half.js'

export type KvCache = Map<string, ort.Tensor>

export async function createSession(onnx: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 })
}

const i64 = (xs: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), dims)

/** An empty cache (past length 0) in the session's KV dtype. */
export function emptyCache(c: LlamaConfig, batch: number, dtype: 'float32' | 'float16'): KvCache {
  const cache: KvCache = new Map()
  const dims = [batch, c.numKvHeads, 0, headDim(c)]
  for (let i = 0; i < c.numLayers; i++)
    for (const kind of ['key', 'value']) {
      const data = dtype === 'float16' ? new Uint16Array(0) : new Float32Array(0)
      cache.set(`past_key_values.${i}.${kind}`, new ort.Tensor(dtype, data, dims))
    }
  return cache
}

export interface StepInput {
  /** [B][S] token ids. */
  ids: number[][]
  /** [B][P+S] 1 = real token, 0 = padding. */
  mask: number[][]
  /** [B][S] */
  positions: number[][]
}

export interface StepOutput {
  /** [B*S*V] float32 */
  logits: Float32Array
  cache: KvCache
}

/** One call of the decoder: returns float32 logits and the next cache. */
export async function step(
  session: ort.InferenceSession,
  input: StepInput,
  cache: KvCache,
): Promise<StepOutput> {
  const B = input.ids.length
  const S = input.ids[0].length
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(input.ids.flat(), [B, S]),
    attention_mask: i64(input.mask.flat(), [B, input.mask[0].length]),
    position_ids: i64(input.positions.flat(), [B, S]),
  }
  for (const [name, t] of cache) feeds[name] = t
  const out = await session.run(feeds)
  const next: KvCache = new Map()
  for (const name of cache.keys()) next.set(name, out[name.replace('past_key_values', 'present')])
  return { logits: toFloat32(out.logits), cache: next }
}

export function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array
  if (t.type === 'float16') return fromHalf(new Uint16Array((t.data as Uint16Array).buffer))
  throw new Error(`unexpected logits dtype ${t.type}`)
}

export function argmax(xs: Float32Array, from = 0, to = xs.length): number {
  let best = from
  for (let i = from; i < to; i++) if (xs[i] > xs[best]) best = i
  return best - from
}

/** Greedy decoding of one prompt through the KV cache; stops at `eos` or after `maxNewTokens`. */
export async function greedy(
  session: ort.InferenceSession,
  c: LlamaConfig,
  prompt: number[],
  maxNewTokens: number,
  o: { eos?: number[]; dtype?: 'float32' | 'float16' } = {},
): Promise<number[]> {
  let cache = emptyCache(c, 1, o.dtype ?? 'float32')
  const out: number[] = []
  let ids = prompt
  let pos = 0
  for (let n = 0; n < maxNewTokens; n++) {
    const total = pos + ids.length
    const r = await step(
      session,
      { ids: [ids], mask: [Array(total).fill(1)], positions: [ids.map((_, i) => pos + i)] },
      cache,
    )
    cache = r.cache
    const V = c.vocabSize
    const next = argmax(r.logits, (ids.length - 1) * V, ids.length * V)
    out.push(next)
    if (o.eos?.includes(next)) break
    pos = total
    ids = [next]
  }
  return out
}
