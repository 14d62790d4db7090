/**
 * Training data: text or JSONL files → token ids → one packed stream (an EOS
 * after each document) → fixed-length windows, split into train and
 * validation windows, and batches chosen by step number from a seeded
 * permutation per epoch (so a resumed run sees exactly the batches an
 * uninterrupted run would).
 *
 * JSONL lines: {"text"} (all tokens trained), {"prompt","completion"} (loss on
 * the completion only), or {"messages"} (rendered with the chat template).
 */
import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { mulberry32 } from '../llama/weights.js'
import type { PrometheusTokenizer } from '../tokenizer/tokenizer.js'
import { IGNORE_INDEX } from './loss.js'
import type { Batch } from './session.js'

/** One tokenized document; `train[i]` says whether token i is a target with a loss. */
export interface Doc {
  ids: number[]
  train?: boolean[]
}

export type DataRecord =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: { role: string; content: string }[] }

/** Tokenizes one JSONL record or plain text. */
export function tokenizeRecord(tok: PrometheusTokenizer, r: DataRecord | string): Doc {
  if (typeof r === 'string') return { ids: tok.encode(r) }
  if ('text' in r) return { ids: tok.encode(r.text) }
  if ('prompt' in r) {
    const p = tok.encode(r.prompt)
    const c = tok.encode(r.completion)
    return { ids: [...p, ...c], train: [...p.map(() => false), ...c.map(() => true)] }
  }
  if ('messages' in r) return { ids: tok.applyChatTemplate(r.messages) }
  throw new Error('data: a JSONL record needs "text", "prompt"+"completion" or "messages"')
}

/** Reads .txt/.md (one document per file) and .jsonl files. */
export async function readDocs(paths: string[], tok: PrometheusTokenizer): Promise<Doc[]> {
  const docs: Doc[] = []
  for (const path of paths) {
    const text = await readFile(path, 'utf8')
    if (extname(path) === '.jsonl') {
      text.split('\n').forEach((line, i) => {
        if (!line.trim()) return
        try {
          docs.push(tokenizeRecord(tok, JSON.parse(line) as DataRecord))
        } catch (e) {
          throw new Error(`data: ${path}:${i + 1}: ${(e as Error).message}`)
        }
      })
    } else docs.push(tokenizeRecord(tok, text))
  }
  return docs
}

/** All documents as one stream, each followed by `eos`. */
export interface Packed {
  tokens: Int32Array
  /** 1 where the token is a target with a loss. */
  train: Uint8Array
}

/**
 * The EOS after a document is trained when the document's last token is (or the
 * document has no mask): a completion learns to end with EOS, while the
 * template text after a chat's last end-of-turn marker (untrained) does not
 * teach "EOS after a newline", which a chat prompt also ends with.
 */
const endTrained = (d: Doc) => !d.train || d.train.at(-1) === true

export function pack(docs: Doc[], eos: number): Packed {
  const n = docs.reduce((a, d) => a + d.ids.length + 1, 0)
  const tokens = new Int32Array(n)
  const train = new Uint8Array(n)
  let at = 0
  for (const d of docs) {
    d.ids.forEach((id, i) => {
      tokens[at] = id
      train[at++] = d.train && !d.train[i] ? 0 : 1
    })
    tokens[at] = eos
    train[at++] = endTrained(d) ? 1 : 0
  }
  return { tokens, train }
}

/** A document as it goes into a row: its ids, the EOS after it, without the untrained tail (no loss reads it). */
export function exampleTokens(d: Doc, eos: number): { tokens: number[]; train: boolean[] } {
  const tokens = [...d.ids, eos]
  const train = [...d.ids.map((_, i) => !d.train || d.train[i]), endTrained(d)]
  const end = train.lastIndexOf(true) + 1 // 0: nothing trained, the document adds no loss
  return { tokens: tokens.slice(0, end), train: train.slice(0, end) }
}

/**
 * Fine-tuning examples laid out in rows of `seqLen + 1` tokens (a row is one
 * window: inputs its first seqLen tokens, targets its last seqLen): each
 * example whole in one row, several short ones in a row in order, the rest of
 * a row padding without loss. Unlike `pack` + fixed windows, no example is cut
 * at a window boundary, so an answer is always trained with its question in
 * view (a cut one teaches answers without their question). An example longer
 * than a row is cut into consecutive windows, as `pack` would.
 */
export function packRows(
  docs: Doc[],
  o: { eos: number; pad: number; seqLen: number },
): { packed: Packed; starts: number[] } {
  const R = o.seqLen + 1
  const rows: { tokens: number[]; train: boolean[] }[] = []
  let row: { tokens: number[]; train: boolean[] } | null = null
  const flush = () => {
    if (row) rows.push(row)
    row = null
  }
  for (const d of docs) {
    const ex = exampleTokens(d, o.eos)
    if (ex.tokens.length === 0) continue
    if (ex.tokens.length > R) {
      flush()
      for (let s = 0; s + 1 < ex.tokens.length; s += o.seqLen)
        rows.push({ tokens: ex.tokens.slice(s, s + R), train: ex.train.slice(s, s + R) })
      continue
    }
    if (row && row.tokens.length + ex.tokens.length <= R) {
      row.tokens.push(...ex.tokens)
      row.train.push(...ex.train)
    } else {
      flush()
      row = { tokens: [...ex.tokens], train: [...ex.train] }
    }
  }
  flush()
  const tokens = new Int32Array(rows.length * R).fill(o.pad)
  const train = new Uint8Array(rows.length * R)
  rows.forEach((r, i) => {
    tokens.set(r.tokens, i * R)
    train.set(
      r.train.map((x) => (x ? 1 : 0)),
      i * R,
    )
  })
  return { packed: { tokens, train }, starts: rows.map((_, i) => i * R) }
}

export interface Dataset {
  packed: Packed
  seqLen: number
  /** Start offsets of windows of seqLen + 1 tokens. */
  trainWindows: number[]
  valWindows: number[]
}

/** Cuts the stream into windows and sends a seeded random `valFraction` of them to validation. */
export function splitDataset(packed: Packed, seqLen: number, valFraction: number, seed: number): Dataset {
  const starts: number[] = []
  for (let s = 0; s + seqLen + 1 <= packed.tokens.length; s += seqLen) starts.push(s)
  if (starts.length < (valFraction > 0 ? 2 : 1))
    throw new Error(`data: ${packed.tokens.length} tokens make too few windows of ${seqLen + 1}`)
  return { packed, seqLen, ...splitWindows(starts, valFraction, seed) }
}

/** A seeded random `valFraction` of the windows (at least one when > 0, and one left to train). */
export function splitWindows(
  starts: number[],
  valFraction: number,
  seed: number,
): { trainWindows: number[]; valWindows: number[] } {
  const rand = mulberry32(seed ^ 0x5eed)
  const val: number[] = []
  const train: number[] = []
  for (const s of starts) (rand() < valFraction ? val : train).push(s)
  if (valFraction > 0 && val.length === 0) val.push(train.pop()!)
  if (train.length === 0) train.push(val.pop()!)
  return { trainWindows: train, valWindows: val }
}

/** Batch of windows: inputs are tokens[s, s+T), targets tokens[s+1, s+T] (ignored where not trained). */
export function makeBatch(d: Dataset, starts: (number | null)[]): Batch {
  const T = d.seqLen
  const inputs = new BigInt64Array(starts.length * T)
  const targets = new BigInt64Array(starts.length * T).fill(BigInt(IGNORE_INDEX))
  starts.forEach((s, b) => {
    if (s === null) return // padding row: no loss
    for (let t = 0; t < T; t++) {
      inputs[b * T + t] = BigInt(d.packed.tokens[s + t])
      if (d.packed.train[s + t + 1]) targets[b * T + t] = BigInt(d.packed.tokens[s + t + 1])
    }
  })
  return { inputs, targets }
}

/** Window starts for training step `step` (0-based): consecutive slots of per-epoch seeded permutations. */
export class BatchSchedule {
  private cache = new Map<number, number[]>()

  constructor(
    private readonly windows: number[],
    private readonly batchSize: number,
    private readonly seed: number,
  ) {}

  starts(step: number): number[] {
    const n = this.windows.length
    return Array.from({ length: this.batchSize }, (_, b) => {
      const k = step * this.batchSize + b
      return this.epoch(Math.floor(k / n))[k % n]
    })
  }

  private epoch(e: number): number[] {
    let perm = this.cache.get(e)
    if (!perm) {
      perm = shuffle(this.windows, this.seed * 7919 + e)
      this.cache.clear()
      this.cache.set(e, perm)
    }
    return perm
  }
}

/** Validation batches in order; the last one padded with loss-free rows. */
export function* valBatches(
  d: Dataset,
  batchSize: number,
  maxBatches = Number.POSITIVE_INFINITY,
): Generator<Batch> {
  for (let i = 0, n = 0; i < d.valWindows.length && n < maxBatches; i += batchSize, n++) {
    const starts: (number | null)[] = d.valWindows.slice(i, i + batchSize)
    while (starts.length < batchSize) starts.push(null)
    yield makeBatch(d, starts)
  }
}

/** Fisher–Yates with a seeded PRNG. */
export function shuffle<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs]
  const rand = mulberry32(seed)
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

/** Entropy (nats/token) of the token frequencies: the loss of the best context-free model. */
export function unigramEntropy(tokens: Int32Array): number {
  const counts = new Map<number, number>()
  for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1)
  let h = 0
  for (const c of counts.values()) {
    const p = c / tokens.length
    h -= p * Math.log(p)
  }
  return h
}
