/**
 * The text side of one choice, after the sampler has picked a token: the
 * incremental detokenizer (whole UTF-8 characters only, text.ts), the stop
 * matcher (exact cut, hold-back), EOS, max_tokens and the context length,
 * logprobs, the finish reason, and the token events to publish. Pure logic
 * over a tokenizer interface: no onnxruntime here (text-pipeline.test.ts
 * checks the import graph), so it is tested with scripted token ids.
 *
 *   const text = new TextPipeline({ index, tokenizer, promptIds, eosTokenIds, stop, maxTokens,
 *                                   contextLength, logprobs, emit })
 *   const done = text.push(token, rawLogits)  // per sampled token, until done
 *   const choice = text.result(echo)
 */
import type { GenerationChoice, TokenEventData, TokenLogprob } from '../../core/protocol.js'
import { logSumExp, topKIndices } from './sampling.js'
import { ByteStreamDetokenizer, type Detokenizer, IncrementalDetokenizer, StopMatcher } from './text.js'

/** What the pipeline needs of a tokenizer (tokenizer.ts `ModelTokenizer` has it). */
export interface PipelineTokenizer {
  /** Decoding is "token bytes, concatenated, as UTF-8": text streams from `decodeBytes`. */
  readonly plainByteLevel: boolean
  /** Text of ids, special tokens skipped. */
  decode(ids: number[]): string
  /** The bytes `decode` would produce for one id (empty for special tokens). */
  decodeBytes(id: number): Uint8Array
  /** The text of one token as a client sees it in logprobs. */
  tokenText(id: number): string
  /** The UTF-8 bytes one token stands for, for logprobs. */
  tokenBytes(id: number): number[]
}

export interface TextPipelineOptions {
  /** The choice's index, on its events and result. */
  index: number
  tokenizer: PipelineTokenizer
  /** The prompt: its last ids give the detokenizer context; its length counts against the context. */
  promptIds: readonly number[]
  /** Ids that end the choice with `stop` (counted, never shown). */
  eosTokenIds: ReadonlySet<number>
  stop: readonly string[]
  maxTokens: number
  contextLength: number
  /** Top alternatives per token; null: no logprobs. */
  logprobs: number | null
  emit(data: TokenEventData): void
}

export type FinishReason = 'stop' | 'length'

export class TextPipeline {
  /** Tokens taken so far (EOS included): the choice's completion tokens. */
  generated = 0
  private text = ''
  private finishReason: FinishReason | null = null
  private readonly logprobs: TokenLogprob[] | null
  private readonly detok: Detokenizer
  private readonly stops: StopMatcher

  constructor(private readonly o: TextPipelineOptions) {
    const tok = o.tokenizer
    this.detok = tok.plainByteLevel
      ? new ByteStreamDetokenizer((id) => tok.decodeBytes(id))
      : new IncrementalDetokenizer((ids) => tok.decode(ids), o.promptIds)
    this.stops = new StopMatcher(o.stop)
    this.logprobs = o.logprobs === null ? null : []
  }

  get index(): number {
    return this.o.index
  }

  /** Whether `push` wants the raw logits (a copy taken before the logits processors change them). */
  get wantsLogits(): boolean {
    return this.o.logprobs !== null
  }

  get done(): boolean {
    return this.finishReason !== null
  }

  /**
   * Takes the next token (and, with logprobs, the model's raw logits it was
   * drawn from); emits what text is complete. True when the choice is done:
   * the token is not to be fed back.
   */
  push(token: number, rawLogits: Float32Array | null = null): boolean {
    if (this.done) throw new Error('TextPipeline: push after the choice finished')
    this.generated++
    const logprob = rawLogits && this.logprobs ? this.tokenLogprob(rawLogits, token) : undefined
    if (logprob) this.logprobs!.push(logprob)

    let piece: string
    let stopped: boolean
    if (this.o.eosTokenIds.has(token)) {
      ;({ text: piece, stopped } = this.stops.push(this.detok.flush()))
      this.finish(piece + (stopped ? '' : this.stops.flush()), 'stop', logprob)
      return true
    }
    ;({ text: piece, stopped } = this.stops.push(this.detok.push(token)))
    if (stopped) {
      this.finish(piece, 'stop', logprob)
      return true
    }
    const full =
      this.generated >= this.o.maxTokens || this.o.promptIds.length + this.generated >= this.o.contextLength
    if (full) {
      const tail = this.stops.push(this.detok.flush())
      piece += tail.text
      if (!tail.stopped) piece += this.stops.flush()
      this.finish(piece, tail.stopped ? 'stop' : 'length', logprob)
      return true
    }
    this.send(piece, logprob)
    return false
  }

  /** The choice as the job output keeps it; `echo` (the prompt, when asked) goes before the text. */
  result(echo = ''): GenerationChoice {
    return {
      index: this.o.index,
      text: echo + this.text,
      // Unfinished (the batch ended it): it ran out of room.
      finishReason: this.finishReason ?? 'length',
      logprobs: this.logprobs,
    }
  }

  private finish(piece: string, reason: FinishReason, logprob: TokenLogprob | undefined): void {
    this.finishReason = reason
    this.send(piece, logprob)
  }

  /** One event per token that brings text or a logprob; a held-back token brings neither. */
  private send(text: string, logprob: TokenLogprob | undefined): void {
    this.text += text
    if (text || logprob)
      this.o.emit(logprob ? { index: this.o.index, text, logprob } : { index: this.o.index, text })
  }

  /** Log-probability of `token` under the model's raw distribution, and the top alternatives. */
  private tokenLogprob(raw: Float32Array, token: number): TokenLogprob {
    const t = this.o.tokenizer
    const lse = logSumExp(raw)
    const entry = (id: number) => ({
      token: t.tokenText(id),
      logprob: raw[id] - lse,
      bytes: t.tokenBytes(id),
    })
    return { ...entry(token), top: topKIndices(raw, this.o.logprobs ?? 0).map(entry) }
  }
}

/** Ordered, non-blocking delivery of token events: the batch never waits for a slow consumer. */
export class TokenEmitter {
  private chain: Promise<void> = Promise.resolve()
  private error: unknown = null

  constructor(private readonly onToken?: (data: TokenEventData) => void | Promise<void>) {}

  emit(data: TokenEventData): void {
    const onToken = this.onToken
    if (!onToken) return
    this.chain = this.chain.then(async () => {
      if (this.error === null) {
        try {
          await onToken(data)
        } catch (err) {
          this.error = err
        }
      }
    })
  }

  /** Resolves when every event emitted so far has been delivered (or skipped after a failure). */
  drain(): Promise<void> {
    return this.chain
  }

  /** The first error `onToken` threw; later events were not delivered. */
  throwIfFailed(): void {
    if (this.error !== null) throw this.error
  }
}
