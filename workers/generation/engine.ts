/**
 * The generation engine of a worker: model folders from the ObjectStore
 * (model-cache.ts), one onnxruntime session and one continuous batcher per
 * open model (decoder.ts, batcher.ts), and per choice the sampling pipeline:
 * logits processors → sampler → incremental detokenizer → stop matcher →
 * token events. Construct it once per worker process:
 *
 *   const engine = GenerationEngine.fromConfig(config, { store, logger, metrics })
 *   const output = await engine.generate(input, { signal, onToken })
 */
import { join } from 'node:path'
import type { Config } from '../../core/config.js'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { ModelManifest } from '../../core/model-manifest.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import type {
  GenerationChoice,
  GenerationInput,
  GenerationOutput,
  TokenEventData,
  TokenLogprob,
} from '../../core/protocol.js'
import { Batcher, type BatchSequence } from './batcher.js'
import { Decoder, type ExecutionProvider } from './decoder.js'
import { contextLengthExceeded, generationCancelled, invalidParameter } from './errors.js'
import { ModelCache } from './model-cache.js'
import { createRng, type Rng, randomSeed } from './prng.js'
import {
  applyProcessors,
  createLogitsProcessors,
  type LogitsProcessor,
  logSumExp,
  sampleToken,
  topKIndices,
} from './sampling.js'
import { ByteStreamDetokenizer, type Detokenizer, IncrementalDetokenizer, StopMatcher } from './text.js'
import { loadTokenizer, type ModelTokenizer } from './tokenizer.js'

export interface GenerationEngineOptions {
  store: ObjectStore
  /** Local folder for downloaded model folders. */
  cacheDir: string
  /** Memory budget for open models, bytes. */
  cacheBudgetBytes: number
  /** Preference order; CPU is always tried last. Default ['cpu']. */
  executionProviders?: readonly ExecutionProvider[]
  /** Rows decoded together per model; default 32. */
  maxBatchSize?: number
  /** How long an idle batcher waits for company, ms; default 2. */
  maxWaitMs?: number
  /** onnxruntime intra-op threads; default: onnxruntime's (one per physical core). */
  intraOpNumThreads?: number
  /** Let idle onnxruntime threads spin; default false (see decoder.ts). */
  allowSpinning?: boolean
  /** Graph to prefer when a folder has fp32 and fp16 ones; default fp32. */
  dtype?: 'fp32' | 'fp16'
  logger?: Logger
  metrics?: Metrics
}

export interface GenerateOptions {
  signal?: AbortSignal
  /** Called per generated piece, in order; awaited before `generate` resolves. */
  onToken?: (data: TokenEventData) => void | Promise<void>
}

/** An open model: everything a request needs. */
export interface LoadedModel {
  id: string
  decoder: Decoder
  tokenizer: ModelTokenizer
  batcher: Batcher
  contextLength: number
  eosTokenIds: ReadonlySet<number>
}

export class GenerationEngine {
  readonly cache: ModelCache<LoadedModel>
  private readonly o: GenerationEngineOptions

  constructor(o: GenerationEngineOptions) {
    this.o = o
    if (o.maxBatchSize !== undefined && !(Number.isInteger(o.maxBatchSize) && o.maxBatchSize >= 1))
      throw new Error('GenerationEngine: maxBatchSize must be an integer >= 1')
    this.cache = new ModelCache<LoadedModel>({
      store: o.store,
      dir: o.cacheDir,
      budgetBytes: o.cacheBudgetBytes,
      logger: o.logger,
      metrics: o.metrics,
      open: (folder, manifest) => this.openModel(folder, manifest),
      sizeOf: (m) => m.decoder.sizeBytes,
      dispose: async (m) => {
        m.batcher.close()
        await m.decoder.release()
      },
    })
  }

  /** The worker's wiring: PGPT_EXECUTION_PROVIDERS, PGPT_MODEL_CACHE_DIR / _MB, PGPT_DATA_DIR. */
  static fromConfig(
    config: Config,
    deps: { store: ObjectStore; logger?: Logger; metrics?: Metrics } & Partial<GenerationEngineOptions>,
  ): GenerationEngine {
    return new GenerationEngine({
      cacheDir: config.PGPT_MODEL_CACHE_DIR ?? join(config.PGPT_DATA_DIR, 'model-cache'),
      cacheBudgetBytes: config.PGPT_MODEL_CACHE_MB * 1024 * 1024,
      executionProviders: config.PGPT_EXECUTION_PROVIDERS,
      ...deps,
    })
  }

  get maxBatchSize(): number {
    return this.o.maxBatchSize ?? 32
  }

  private async openModel(folder: string, manifest: ModelManifest): Promise<LoadedModel> {
    const [decoder, tokenizer] = await Promise.all([
      Decoder.open(folder, {
        executionProviders: this.o.executionProviders,
        intraOpNumThreads: this.o.intraOpNumThreads,
        dtype: this.o.dtype,
        allowSpinning: this.o.allowSpinning,
        logger: this.o.logger?.child({ model: manifest.id }),
      }),
      loadTokenizer(folder),
    ])
    const batcher = new Batcher(decoder, {
      model: manifest.id,
      maxBatchSize: this.maxBatchSize,
      maxWaitMs: this.o.maxWaitMs,
      logger: this.o.logger,
      metrics: this.o.metrics,
    })
    return {
      id: manifest.id,
      decoder,
      tokenizer,
      batcher,
      contextLength: Math.min(decoder.info.contextLength, manifest.context_length),
      eosTokenIds: new Set([...decoder.info.eosTokenIds, ...tokenizer.eosTokenIds]),
    }
  }

  /** Runs one generation job to completion (or cancellation). */
  async generate(input: GenerationInput, options: GenerateOptions = {}): Promise<GenerationOutput> {
    const s = input.sampling
    if (s.n > this.maxBatchSize)
      throw invalidParameter('n', `n must be at most ${this.maxBatchSize} on this worker (got ${s.n}).`)
    if (!Number.isInteger(s.maxTokens) || s.maxTokens < 1)
      throw invalidParameter('max_tokens', `max_tokens must be a positive integer (got ${s.maxTokens}).`)
    if (input.endpoint === 'chat.completions' && !input.messages?.length)
      throw invalidParameter('messages', 'messages must be a non-empty array.')
    if (input.endpoint === 'completions' && input.prompt === undefined)
      throw invalidParameter('prompt', 'prompt is required.')
    // Validates before a model loads: bad parameters fail fast.
    createLogitsProcessors(s, 0)
    if (options.signal?.aborted) throw generationCancelled()

    const lease = await this.cache.acquire(input.model)
    try {
      const m = lease.model
      const promptIds =
        input.endpoint === 'chat.completions'
          ? m.tokenizer.encodeChat(input.messages!)
          : m.tokenizer.encode(input.prompt!)
      if (!promptIds.length) {
        if (m.decoder.info.bosTokenId === null && m.tokenizer.bosTokenId === null)
          throw invalidParameter('prompt', 'The prompt is empty.')
        promptIds.push(m.tokenizer.bosTokenId ?? m.decoder.info.bosTokenId!)
      }
      if (promptIds.length >= m.contextLength) throw contextLengthExceeded(promptIds.length, m.contextLength)

      const emitter = new Emitter(options.onToken)
      const seed = s.seed ?? randomSeed()
      const echo = input.endpoint === 'completions' && input.echo ? input.prompt! : ''
      const choices = Array.from({ length: s.n }, (_, index) => {
        if (echo && input.stream) emitter.emit({ index, text: echo })
        return new Choice(index, {
          model: m,
          promptIds,
          input,
          rng: s.temperature > 0 ? createRng(seed, index) : null,
          emit: (data) => emitter.emit(data),
        })
      })
      try {
        await m.batcher.submit(promptIds, choices, options.signal)
      } finally {
        await emitter.drain()
      }
      emitter.throwIfFailed()
      return {
        model: input.model,
        choices: choices.map((c) => c.result(echo)),
        usage: {
          promptTokens: promptIds.length,
          completionTokens: choices.reduce((sum, c) => sum + c.generated, 0),
        },
      }
    } finally {
      lease.release()
    }
  }

  async close(): Promise<void> {
    await this.cache.close()
  }
}

/** Ordered, non-blocking delivery of token events: the batch never waits for a slow consumer. */
class Emitter {
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

  drain(): Promise<void> {
    return this.chain
  }

  throwIfFailed(): void {
    if (this.error !== null) throw this.error
  }
}

interface ChoiceOptions {
  model: LoadedModel
  promptIds: number[]
  input: GenerationInput
  rng: Rng | null
  emit(data: TokenEventData): void
}

/** One choice: a sequence in the batch and its text pipeline. */
class Choice implements BatchSequence {
  readonly ids: number[]
  generated = 0
  private text = ''
  private finishReason: 'stop' | 'length' | null = null
  private readonly logprobs: TokenLogprob[] | null
  private readonly processors: LogitsProcessor[]
  private readonly detok: Detokenizer
  private readonly stops: StopMatcher
  private readonly topLogprobs: number | null
  private readonly promptLength: number

  constructor(
    readonly index: number,
    private readonly o: ChoiceOptions,
  ) {
    const s = o.input.sampling
    this.ids = [...o.promptIds]
    this.promptLength = o.promptIds.length
    this.processors = createLogitsProcessors(s, this.promptLength)
    const tok = o.model.tokenizer
    this.detok = tok.plainByteLevel
      ? new ByteStreamDetokenizer((id) => tok.decodeBytes(id))
      : new IncrementalDetokenizer((ids) => tok.decode(ids), o.promptIds)
    this.stops = new StopMatcher(s.stop)
    this.topLogprobs = s.logprobs
    this.logprobs = s.logprobs === null ? null : []
  }

  step(logits: Float32Array): { token: number; done: boolean } {
    const raw = this.topLogprobs === null ? null : logits.slice()
    const token = sampleToken(applyProcessors(this.processors, this.ids, logits), this.o.rng)
    this.ids.push(token)
    this.generated++
    const logprob = raw ? this.tokenLogprob(raw, token) : undefined
    if (logprob) this.logprobs!.push(logprob)

    const { model } = this.o
    let piece: string
    let stopped: boolean
    if (model.eosTokenIds.has(token)) {
      ;({ text: piece, stopped } = this.stops.push(this.detok.flush()))
      this.finish(piece + (stopped ? '' : this.stops.flush()), 'stop', logprob)
      return { token, done: true }
    }
    ;({ text: piece, stopped } = this.stops.push(this.detok.push(token)))
    if (stopped) {
      this.finish(piece, 'stop', logprob)
      return { token, done: true }
    }
    const full = this.generated >= this.o.input.sampling.maxTokens || this.ids.length >= model.contextLength
    if (full) {
      const tail = this.stops.push(this.detok.flush())
      piece += tail.text
      if (!tail.stopped) piece += this.stops.flush()
      this.finish(piece, tail.stopped ? 'stop' : 'length', logprob)
      return { token, done: true }
    }
    this.send(piece, logprob)
    return { token, done: false }
  }

  result(echo: string): GenerationChoice {
    return {
      index: this.index,
      text: echo + this.text,
      finishReason: this.finishReason ?? 'length',
      logprobs: this.logprobs,
    }
  }

  private finish(piece: string, reason: 'stop' | 'length', logprob: TokenLogprob | undefined): void {
    this.finishReason = reason
    this.send(piece, logprob)
  }

  private send(text: string, logprob: TokenLogprob | undefined): void {
    this.text += text
    if (text || logprob)
      this.o.emit(logprob ? { index: this.index, text, logprob } : { index: this.index, text })
  }

  /** Log-probability of `token` under the model's raw distribution, and the top alternatives. */
  private tokenLogprob(raw: Float32Array, token: number): TokenLogprob {
    const t = this.o.model.tokenizer
    const lse = logSumExp(raw)
    const entry = (id: number) => ({
      token: t.tokenText(id),
      logprob: raw[id] - lse,
      bytes: t.tokenBytes(id),
    })
    return { ...entry(token), top: topKIndices(raw, this.topLogprobs ?? 0).map(entry) }
  }
}
