/**
 * Byte-level BPE trainer (GPT-2 style). Hand-written because no JS library
 * trains BPE. The result is the vocab + merges of a Hugging Face `BPE` model;
 * encoding and decoding go through `@huggingface/tokenizers`, never through here.
 *
 * Algorithm (as in huggingface/tokenizers `BpeTrainer`): split the corpus with
 * the GPT-2 regex, count distinct words, map each word's UTF-8 bytes to
 * printable symbols (bytes_to_unicode), then repeatedly merge the most frequent
 * adjacent pair. Pair counts are kept incrementally: a merge only re-counts the
 * words that contain the merged pair (found through a pair → words index), and
 * a lazy max-heap gives the next pair without scanning all pairs. Ties go to
 * the pair with the smaller ids, as in the Rust trainer.
 */

/** The GPT-2 pre-tokenizer regex, the one the ByteLevel pre-tokenizer uses. */
export const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

/** GPT-2's reversible byte → printable character table (openai/gpt-2 encoder.py `bytes_to_unicode`). */
export function bytesToUnicode(): string[] {
  const printable: number[] = []
  const add = (a: number, b: number) => {
    for (let i = a; i <= b; i++) printable.push(i)
  }
  add(33, 126) // '!'..'~'
  add(161, 172) // '¡'..'¬'
  add(174, 255) // '®'..'ÿ'
  const table: string[] = new Array(256)
  let extra = 0
  for (let b = 0; b < 256; b++) {
    table[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++)
  }
  return table
}

export interface BpeTrainOptions {
  /** Final vocabulary size, special tokens and the 256 byte symbols included. */
  vocabSize: number
  /** Added first, at ids 0..n-1. */
  specialTokens?: string[]
  /** A pair must occur at least this often to be merged; default 2. */
  minFrequency?: number
}

export interface BpeModel {
  /** token → id; special tokens first, then the 256 byte symbols, then merges in order. */
  vocab: Map<string, number>
  merges: [string, string][]
}

/** Max-heap of [count, pairKey], ties broken by the smaller key so training is deterministic. */
class PairHeap {
  private readonly items: [number, number][] = []
  get size() {
    return this.items.length
  }
  private before(a: [number, number], b: [number, number]) {
    return a[0] > b[0] || (a[0] === b[0] && a[1] < b[1])
  }
  push(item: [number, number]) {
    const h = this.items
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.before(h[i], h[p])) break
      ;[h[i], h[p]] = [h[p], h[i]]
      i = p
    }
  }
  pop(): [number, number] | undefined {
    const h = this.items
    const top = h[0]
    const last = h.pop()
    if (h.length > 0 && last) {
      h[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < h.length && this.before(h[l], h[m])) m = l
        if (r < h.length && this.before(h[r], h[m])) m = r
        if (m === i) break
        ;[h[i], h[m]] = [h[m], h[i]]
        i = m
      }
    }
    return top
  }
}

/** Symbol ids stay below 2^21, so a pair packs into one safe integer. */
const SHIFT = 2 ** 21
const pairKey = (a: number, b: number) => a * SHIFT + b

/** Counts pre-tokenized words; call `add` per document, then `train`. */
export class BpeTrainer {
  private readonly wordCounts = new Map<string, number>()

  add(text: string): void {
    for (const m of text.matchAll(GPT2_SPLIT)) this.wordCounts.set(m[0], (this.wordCounts.get(m[0]) ?? 0) + 1)
  }

  train(o: BpeTrainOptions): BpeModel {
    const specials = o.specialTokens ?? []
    const minFrequency = o.minFrequency ?? 2
    const byteSymbols = bytesToUnicode()
    if (o.vocabSize < specials.length + 256)
      throw new Error(`bpe: vocabSize must be >= ${specials.length + 256}`)
    // Symbol id s < 256 is byte s; merged symbols get 256, 257, ...
    const symbols = [...byteSymbols]
    const symbolIds = new Map(symbols.map((s, i) => [s, i]))
    const encoder = new TextEncoder()
    const words: number[][] = []
    const freqs: number[] = []
    for (const [word, count] of this.wordCounts) {
      words.push([...encoder.encode(word)])
      freqs.push(count)
    }
    const counts = new Map<number, number>()
    const where = new Map<number, Set<number>>()
    const addPairs = (w: number, sign: 1 | -1, touched: Set<number>) => {
      const s = words[w]
      for (let i = 0; i + 1 < s.length; i++) {
        const k = pairKey(s[i], s[i + 1])
        counts.set(k, (counts.get(k) ?? 0) + sign * freqs[w])
        touched.add(k)
        if (sign > 0) {
          const set = where.get(k)
          if (set) set.add(w)
          else where.set(k, new Set([w]))
        }
      }
    }
    const heap = new PairHeap()
    const initial = new Set<number>()
    for (let w = 0; w < words.length; w++) addPairs(w, 1, initial)
    for (const k of initial) heap.push([counts.get(k)!, k])

    const merges: [string, string][] = []
    const target = o.vocabSize - specials.length
    while (symbols.length < target && heap.size > 0) {
      const [count, key] = heap.pop()!
      if (counts.get(key) !== count) continue // stale entry; a fresher one is in the heap
      if (count < minFrequency) break
      const a = Math.floor(key / SHIFT)
      const b = key % SHIFT
      // Two merges can spell the same string ('a'+'bc', 'ab'+'c'): they share one id, as in HF tokenizers.
      const text = symbols[a] + symbols[b]
      let merged = symbolIds.get(text)
      if (merged === undefined) {
        merged = symbols.length
        symbols.push(text)
        symbolIds.set(text, merged)
      }
      merges.push([symbols[a], symbols[b]])
      const touched = new Set<number>()
      for (const w of where.get(key) ?? []) {
        const s = words[w]
        addPairs(w, -1, touched)
        const next: number[] = []
        for (let i = 0; i < s.length; i++) {
          if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
            next.push(merged)
            i++
          } else next.push(s[i])
        }
        words[w] = next
        addPairs(w, 1, touched)
      }
      where.delete(key)
      counts.delete(key)
      for (const k of touched) {
        const n = counts.get(k)
        if (n === undefined) continue
        if (n <= 0) counts.delete(k)
        else heap.push([n, k])
      }
    }
    const vocab = new Map<string, number>()
    for (const t of specials) vocab.set(t, vocab.size)
    for (const s of symbols) vocab.set(s, vocab.size)
    return { vocab, merges }
  }
}
