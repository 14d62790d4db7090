/**
 * A fine-tuning job's data: the uploaded JSONL files (core/jsonl.ts checks
 * them line by line), tokenized with the base model's tokenizer — chat
 * examples through the model's chat template with the loss on the assistant
 * turns only, prompt / completion examples with the loss on the completion
 * only (models/train/data.ts) — laid out one or more whole examples per row
 * (`packRows`: an answer is never cut off from its question). With a
 * validation file the training file gives the training rows and the
 * validation file the validation rows; without one a seeded 10% of the
 * training rows is held out.
 */
import { type FineTuneExample, parseFineTuneJsonl } from '../../core/jsonl.js'
import type { PrometheusTokenizer } from '../../models/tokenizer/tokenizer.js'
import {
  type Dataset,
  type Doc,
  exampleTokens,
  packRows,
  splitWindows,
  tokenizeRecord,
} from '../../models/train/data.js'

/**
 * `stopIds`: the ids generation stops on (the model's EOS and end-of-turn
 * tokens, as the generation worker reads them); a chat's assistant turn is
 * trained through its first one.
 */
export const tokenizeExamples = (
  tok: PrometheusTokenizer,
  examples: FineTuneExample[],
  stopIds: readonly number[] = [tok.eosTokenId],
): Doc[] =>
  examples.map((e) =>
    e.kind === 'chat'
      ? chatDoc(
          tok,
          e.messages.map((m) => ({ role: m.role, content: m.content })),
          stopIds,
        )
      : tokenizeRecord(tok, { prompt: e.prompt, completion: e.completion }),
  )

const isPrefix = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i])

/**
 * A chat rendered with the model's template, the loss on the assistant turns
 * only (as OpenAI trains chat examples): each assistant span is what the
 * template adds between the conversation before it (with the generation
 * prompt) and the conversation through it, trained through its end-of-turn
 * marker (the first of `stopIds` in it: where generation stops) and not
 * beyond. What a template writes after that marker (ChatML's newline) is
 * never generated; training it would teach the model what follows a newline
 * at the end of a turn — and the generation prompt ends with a newline too.
 * A span without a stop id is trained whole. A template that does not render
 * prefixes stably gets the loss everywhere.
 */
export function chatDoc(
  tok: PrometheusTokenizer,
  messages: { role: string; content: string }[],
  stopIds: readonly number[] = [tok.eosTokenId],
): Doc {
  const ids = tok.applyChatTemplate(messages)
  const train = ids.map(() => false)
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== 'assistant') continue
    const before = tok.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true })
    const through = tok.applyChatTemplate(messages.slice(0, i + 1))
    if (!isPrefix(before, through) || !isPrefix(through, ids)) return { ids }
    for (let t = before.length; t < through.length; t++) {
      train[t] = true
      if (stopIds.includes(ids[t])) break
    }
  }
  return { ids, train }
}

/** Trainable tokens of a job at most (its adapter's rows: slot memory per served fine-tune). */
export const MAX_TRAINABLE_TOKENS = 2048

/**
 * The tokens whose embedding rows a fine-tune trains (models/train/lora.ts
 * trainable tokens): every token of the training examples — the template's
 * markers, the questions' words, the answers' words — the most frequent
 * MAX_TRAINABLE_TOKENS when there are more; ascending ids.
 */
export function trainableTokensOf(docs: Doc[], max = MAX_TRAINABLE_TOKENS): number[] {
  const counts = new Map<number, number>()
  for (const d of docs) for (const id of d.ids) counts.set(id, (counts.get(id) ?? 0) + 1)
  return [...counts]
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, max)
    .map(([id]) => id)
    .sort((a, b) => a - b)
}

/** Parses a fine-tune file; throws core/jsonl's JsonlError naming the bad lines. */
export const parseExamples = (text: string) => parseFineTuneJsonl(text)

/** Row length for `docs`: the longest example (EOS included) rounded up to 8, at most `maxSeqLen`. */
export function rowLength(docs: Doc[], eos: number, maxSeqLen: number): number {
  const longest = docs.reduce((a, d) => Math.max(a, exampleTokens(d, eos).tokens.length), 0)
  return Math.min(maxSeqLen, Math.max(8, Math.ceil((longest - 1) / 8) * 8))
}

/**
 * Rows of `seqLen` tokens (the `rowLength` of both files, at most `maxSeqLen`).
 * Throws a message fit for the job's error when a file has nothing to train on.
 */
export function buildDataset(
  train: Doc[],
  validation: Doc[] | null,
  o: { eos: number; pad: number; maxSeqLen: number; seed: number },
): Dataset {
  const seqLen = rowLength([...train, ...(validation ?? [])], o.eos, o.maxSeqLen)
  const a = packRows(train, { ...o, seqLen })
  if (a.starts.length === 0) throw new Error('the training file has no tokens to train on')
  if (!validation) {
    if (a.starts.length < 2)
      throw new Error(
        `the training file makes ${a.starts.length} training sequence of ${seqLen + 1} tokens; without a validation file it needs at least 2 (one is held out for validation)`,
      )
    return { packed: a.packed, seqLen, ...splitWindows(a.starts, 0.1, o.seed) }
  }
  const b = packRows(validation, { ...o, seqLen })
  if (b.starts.length === 0) throw new Error('the validation file has no tokens to validate on')
  const n = a.packed.tokens.length
  const tokens = new Int32Array(n + b.packed.tokens.length)
  tokens.set(a.packed.tokens)
  tokens.set(b.packed.tokens, n)
  const trainMask = new Uint8Array(tokens.length)
  trainMask.set(a.packed.train)
  trainMask.set(b.packed.train, n)
  return {
    packed: { tokens, train: trainMask },
    seqLen,
    trainWindows: a.starts,
    valWindows: b.starts.map((s) => s + n),
  }
}
