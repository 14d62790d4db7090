/**
 * A fine-tuning job's data: the uploaded JSONL files (core/jsonl.ts checks
 * them line by line), tokenized with the base model's tokenizer — chat
 * examples through the model's chat template with the loss on the assistant
 * turns only, prompt / completion examples with the loss on the completion
 * only (models/train/data.ts) — packed into one stream and cut into windows.
 * With a validation file the training file gives the training windows and the
 * validation file the validation windows; without one a seeded 10% of the
 * training windows is held out.
 */
import { type FineTuneExample, parseFineTuneJsonl } from '../../core/jsonl.js'
import type { PrometheusTokenizer } from '../../models/tokenizer/tokenizer.js'
import { type Dataset, type Doc, pack, splitDataset, tokenizeRecord } from '../../models/train/data.js'

export const tokenizeExamples = (tok: PrometheusTokenizer, examples: FineTuneExample[]): Doc[] =>
  examples.map((e) =>
    e.kind === 'chat'
      ? chatDoc(
          tok,
          e.messages.map((m) => ({ role: m.role, content: m.content })),
        )
      : tokenizeRecord(tok, { prompt: e.prompt, completion: e.completion }),
  )

const isPrefix = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i])

/**
 * A chat rendered with the model's template, the loss on the assistant turns
 * only (as OpenAI trains chat examples): each assistant span is what the
 * template adds between the conversation before it (with the generation
 * prompt) and the conversation through it, its end-of-turn marker included.
 * A template that does not render prefixes stably gets the loss everywhere.
 */
export function chatDoc(tok: PrometheusTokenizer, messages: { role: string; content: string }[]): Doc {
  const ids = tok.applyChatTemplate(messages)
  const train = ids.map(() => false)
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== 'assistant') continue
    const before = tok.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true })
    const through = tok.applyChatTemplate(messages.slice(0, i + 1))
    if (!isPrefix(before, through) || !isPrefix(through, ids)) return { ids }
    for (let t = before.length; t < through.length; t++) train[t] = true
  }
  return { ids, train }
}

/** Parses a fine-tune file; throws core/jsonl's JsonlError naming the bad lines. */
export const parseExamples = (text: string) => parseFineTuneJsonl(text)

const windows = (from: number, to: number, seqLen: number) => {
  const out: number[] = []
  for (let s = from; s + seqLen + 1 <= to; s += seqLen) out.push(s)
  return out
}

/** Throws a message fit for the job's error when a file is too small for one window. */
export function buildDataset(
  train: Doc[],
  validation: Doc[] | null,
  o: { eos: number; seqLen: number; seed: number },
): Dataset {
  const a = pack(train, o.eos)
  const need = `at least ${o.seqLen + 1} tokens`
  if (a.tokens.length < o.seqLen + 1)
    throw new Error(`the training file has ${a.tokens.length} tokens; it needs ${need}`)
  if (!validation) {
    if (a.tokens.length < 2 * o.seqLen + 1)
      throw new Error(
        `the training file has ${a.tokens.length} tokens; without a validation file it needs at least ${2 * o.seqLen + 1}`,
      )
    return splitDataset(a, o.seqLen, 0.1, o.seed)
  }
  const b = pack(validation, o.eos)
  if (b.tokens.length < o.seqLen + 1)
    throw new Error(`the validation file has ${b.tokens.length} tokens; it needs ${need}`)
  const tokens = new Int32Array(a.tokens.length + b.tokens.length)
  tokens.set(a.tokens)
  tokens.set(b.tokens, a.tokens.length)
  const trainMask = new Uint8Array(tokens.length)
  trainMask.set(a.train)
  trainMask.set(b.train, a.train.length)
  return {
    packed: { tokens, train: trainMask },
    seqLen: o.seqLen,
    trainWindows: windows(0, a.tokens.length, o.seqLen),
    valWindows: windows(a.tokens.length, tokens.length, o.seqLen),
  }
}
