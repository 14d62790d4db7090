/**
 * Text samples from an exported decoder (the ONNX the server runs): top-k
 * sampling with temperature through the KV cache, seeded. For model cards and
 * training reports; the serving engine lives in workers/.
 */
import type * as ort from 'onnxruntime-node'
import type { LlamaConfig } from '../config.js'
import { mulberry32 } from '../llama/weights.js'
import { emptyCache, step } from '../ort-decode.js'
import type { PrometheusTokenizer } from '../tokenizer/tokenizer.js'

export interface SampleOptions {
  maxNewTokens?: number
  /** Default 0.8; 0 = greedy. */
  temperature?: number
  /** Default 40. */
  topK?: number
  seed?: number
}

export async function sampleText(
  session: ort.InferenceSession,
  c: LlamaConfig,
  tok: PrometheusTokenizer,
  prompt: string,
  o: SampleOptions = {},
): Promise<string> {
  const rand = mulberry32(o.seed ?? 0)
  const temperature = o.temperature ?? 0.8
  const topK = o.topK ?? 40
  let cache = emptyCache(c, 1, 'float32')
  let ids = tok.encode(prompt)
  let pos = 0
  const out: number[] = []
  for (let n = 0; n < (o.maxNewTokens ?? 60); n++) {
    const total = pos + ids.length
    const r = await step(
      session,
      { ids: [ids], mask: [Array(total).fill(1)], positions: [ids.map((_, i) => pos + i)] },
      cache,
    )
    cache = r.cache
    const V = c.vocabSize
    const logits = r.logits.subarray((ids.length - 1) * V, ids.length * V)
    const next = pick(logits, temperature, topK, rand)
    if (next === tok.eosTokenId) break
    out.push(next)
    pos = total
    ids = [next]
  }
  return tok.decode(out)
}

function pick(logits: Float32Array, temperature: number, topK: number, rand: () => number): number {
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a])
  if (temperature <= 0) return order[0]
  const top = order.slice(0, topK)
  const max = logits[top[0]]
  const weights = top.map((i) => Math.exp((logits[i] - max) / temperature))
  let r = rand() * weights.reduce((a, b) => a + b, 0)
  for (let i = 0; i < top.length; i++) {
    r -= weights[i]
    if (r <= 0) return top[i]
  }
  return top[top.length - 1]
}
