/**
 * Test support: tiny model folders built with the models/ toolkit (random
 * weights, a byte-level BPE trained on a few lines) and published into an
 * ObjectStore the way the product publishes models.
 *
 * Two kinds:
 * - `random`: every weight random; what the numeric tests (reference,
 *   batching, seeds) run on.
 * - `chain`: the layers' output projections are zero, so the residual stream
 *   is the token embedding and the next token depends on the current one
 *   only; the untied LM head is then set so that greedy decoding follows a
 *   given chain of token ids (one byte per token). That makes the text
 *   deterministic for the UTF-8, stop-sequence and EOS tests.
 */
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { publishModelFolder } from '../../core/model-publish.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import {
  type LlamaConfig,
  parseConfig,
  randomWeights,
  type TokenizerFiles,
  trainTokenizer,
  type Weights,
  writeModelFolder,
} from '../../models/index.js'
import { bytesToUnicode } from '../../models/tokenizer/bpe.js'

const CORPUS = [
  'The quick brown fox jumps over the lazy dog.',
  'Prometheus brought fire to the people; the gods were not pleased.',
  'Small models generate text one token at a time, and the cache remembers the past.',
  'Ein Beispiel mit Umlauten: Grüße aus Köln, déjà vu, naïve café.',
  'Numbers 0123456789 and symbols: + - * / = < > ( ) [ ] { }',
]

export interface TestModel {
  folder: string
  config: LlamaConfig
  weights: Weights
  tokenizer: TokenizerFiles
  /** Token id of the single-byte token for `byte`. */
  byteToken(byte: number): number
  eosTokenId: number
}

export interface TestModelOptions {
  kind?: 'random' | 'chain'
  seed?: number
  /** Std of the random matrices; default 0.08 (spread-out logits, few near-ties). */
  std?: number
  /** For `chain`: token ids greedy decoding walks through (each id at most once). */
  chain?: number[]
  maxPositions?: number
  numLayers?: number
  hiddenSize?: number
  /** ONNX graphs to write; default ['fp32']. */
  onnx?: ('fp32' | 'fp16')[]
  dir?: string
}

let tokenizerCache: TokenizerFiles | null = null

export function testTokenizer(): TokenizerFiles {
  tokenizerCache ??= trainTokenizer(Array.from({ length: 4 }, () => CORPUS).flat(), {
    vocabSize: 320,
    minFrequency: 2,
    maxLength: 256,
  })
  return tokenizerCache
}

export function byteTokenLookup(tokenizer: TokenizerFiles): (byte: number) => number {
  const vocab = (tokenizer.tokenizer as { model: { vocab: Record<string, number> } }).model.vocab
  const chars = bytesToUnicode()
  return (byte) => {
    const id = vocab[chars[byte]]
    if (id === undefined) throw new Error(`no single-byte token for 0x${byte.toString(16)}`)
    return id
  }
}

export async function buildTestModel(o: TestModelOptions = {}): Promise<TestModel> {
  const tokenizer = testTokenizer()
  const vocab = (tokenizer.tokenizer as { model: { vocab: Record<string, number> } }).model.vocab
  const vocabSize = Math.max(...Object.values(vocab)) + 1
  const eosTokenId = vocab['<|endoftext|>']
  const kind = o.kind ?? 'random'
  const config = parseConfig({
    vocabSize,
    hiddenSize: o.hiddenSize ?? 64,
    numLayers: o.numLayers ?? 2,
    numHeads: 4,
    numKvHeads: 2,
    intermediateSize: 2 * (o.hiddenSize ?? 64),
    maxPositions: o.maxPositions ?? 96,
    tieEmbeddings: kind === 'random',
    bosTokenId: eosTokenId,
    eosTokenId,
    padTokenId: eosTokenId,
  })
  const weights = randomWeights(config, { seed: o.seed ?? 1, std: o.std ?? 0.08 })
  if (kind === 'chain') makeChain(weights, config, o.chain ?? [])
  const folder = o.dir ?? (await mkdtemp(join(tmpdir(), 'pgpt-gen-model-')))
  await writeModelFolder(
    folder,
    { config, weights, tokenizer, card: { name: `test ${kind}` } },
    { onnx: o.onnx },
  )
  return { folder, config, weights, tokenizer, byteToken: byteTokenLookup(tokenizer), eosTokenId }
}

function makeChain(w: Weights, c: LlamaConfig, chain: number[]): void {
  if (new Set(chain.slice(0, -1)).size !== chain.length - 1) throw new Error('chain: ids must not repeat')
  for (const [name, t] of w) {
    if (name.endsWith('o_proj.weight') || name.endsWith('down_proj.weight')) t.data.fill(0)
  }
  const C = c.hiddenSize
  const embed = w.get('model.embed_tokens.weight')!.data
  const head = w.get('lm_head.weight')!.data // [V, C]
  for (let i = 0; i + 1 < chain.length; i++) {
    // h = RMSNorm(embed[t]) (norm weights are 1); make logit[next] = 20 + noise.
    const e = embed.subarray(chain[i] * C, (chain[i] + 1) * C)
    let ms = 0
    for (const v of e) ms += v * v
    const scale = 1 / Math.sqrt(ms / C + c.rmsNormEps)
    let norm2 = 0
    for (const v of e) norm2 += (v * scale) ** 2
    const row = head.subarray(chain[i + 1] * C, (chain[i + 1] + 1) * C)
    for (let j = 0; j < C; j++) row[j] += (20 * e[j] * scale) / norm2
  }
}

/** Uploads a model folder as `models/<id>/…` with its manifest. */
export async function publishTestModel(store: ObjectStore, model: TestModel, id: string): Promise<void> {
  await publishModelFolder(store, model.folder, { id, owner: null, contextLength: model.config.maxPositions })
}

/** Token ids, one per UTF-8 byte of `text`. */
export const byteChain = (model: Pick<TestModel, 'byteToken'>, text: string): number[] =>
  [...Buffer.from(text, 'utf8')].map((b) => model.byteToken(b))
