/**
 * The generation engine of a worker: the model registry (model-registry.ts:
 * model folders from the ObjectStore, one onnxruntime session and one
 * continuous batcher per open model, LoRA fine-tunes in slots of their base)
 * and, per choice, logits processors → sampler (sampling.ts) → the text
 * pipeline (text-pipeline.ts: incremental detokenizer → stops → EOS and
 * limits → token events). Construct it once per worker process:
 *
 *   const engine = GenerationEngine.fromConfig(config, { store, logger, metrics })
 *   const output = await engine.generate(input, { signal, onToken })
 */
import { join } from 'node:path'
import type { Config } from '../../core/config.js'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import type { GenerationInput, GenerationOutput, TokenEventData } from '../../core/protocol.js'
import type { BatchSequence } from './batcher.js'
import { contextLengthExceeded, generationCancelled, invalidParameter } from './errors.js'
import type { Lease, ModelCache } from './model-cache.js'
import {
  type LoadedAdapter,
  type LoadedModel,
  ModelRegistry,
  type ModelRegistryOptions,
} from './model-registry.js'
import { createRng, type Rng, randomSeed } from './prng.js'
import { applyProcessors, createLogitsProcessors, type LogitsProcessor, sampleToken } from './sampling.js'
import { TextPipeline, TokenEmitter } from './text-pipeline.js'

export type { LoadedAdapter, LoadedModel } from './model-registry.js'

export type GenerationEngineOptions = ModelRegistryOptions

export interface GenerateOptions {
  signal?: AbortSignal
  /** Called per generated piece, in order; awaited before `generate` resolves. */
  onToken?: (data: TokenEventData) => void | Promise<void>
  /** Seed when the request gives none (the handler derives it from the job id). Default: random. */
  defaultSeed?: number
}

export class GenerationEngine {
  /** Which model serves an id: loading, slots, eviction. */
  readonly models: ModelRegistry

  constructor(o: GenerationEngineOptions) {
    this.models = new ModelRegistry(o)
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
      graph: config.PGPT_ENGINE_GRAPH,
      loraSlots: config.PGPT_LORA_SLOTS,
      ...deps,
    })
  }

  /** Open models (bases, and fine-tunes served merged). */
  get cache(): ModelCache<LoadedModel> {
    return this.models.cache
  }

  /** Adapters of fine-tunes served beside their base. */
  get adapters(): ModelCache<LoadedAdapter> {
    return this.models.adapters
  }

  get maxBatchSize(): number {
    return this.models.maxBatchSize
  }

  /** A lease on a model ready to generate (see ModelRegistry.acquire). */
  acquire(id: string, signal?: AbortSignal): Promise<Lease<LoadedModel>> {
    return this.models.acquire(id, signal)
  }

  /** Runs one generation job to completion (or cancellation). */
  async generate(input: GenerationInput, options: GenerateOptions = {}): Promise<GenerationOutput> {
    const s = input.sampling
    // The sampling bounds were checked once, against core/protocol.ts (the handler parses the job input);
    // what is left is this worker's own limit and the one-of prompt/messages the schema does not say.
    if (s.n > this.maxBatchSize)
      throw invalidParameter('n', `n must be at most ${this.maxBatchSize} on this worker (got ${s.n}).`)
    if (input.endpoint === 'chat.completions' && !input.messages?.length)
      throw invalidParameter('messages', 'messages must be a non-empty array.')
    if (input.endpoint === 'completions' && input.prompt === undefined)
      throw invalidParameter('prompt', 'prompt is required.')
    if (options.signal?.aborted) throw generationCancelled()

    const lease = await this.acquire(input.model, options.signal)
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

      const emitter = new TokenEmitter(options.onToken)
      const seed = s.seed ?? options.defaultSeed ?? randomSeed()
      const echo = input.endpoint === 'completions' && input.echo ? input.prompt! : ''
      const choices = Array.from({ length: s.n }, (_, index) => {
        if (echo && input.stream) emitter.emit({ index, text: echo })
        return new Choice(
          promptIds,
          createLogitsProcessors(s, promptIds.length),
          s.temperature > 0 ? createRng(seed, index) : null,
          new TextPipeline({
            index,
            tokenizer: m.tokenizer,
            promptIds,
            eosTokenIds: m.eosTokenIds,
            stop: s.stop,
            maxTokens: s.maxTokens,
            contextLength: m.contextLength,
            logprobs: s.logprobs,
            emit: (data) => emitter.emit(data),
          }),
        )
      })
      const usage = () => ({
        promptTokens: promptIds.length,
        completionTokens: choices.reduce((sum, c) => sum + c.text.generated, 0),
      })
      try {
        await m.batcher.submit(promptIds, choices, options.signal, {
          adapterIndex: m.adapterIndex,
          model: m.id,
        })
      } catch (err) {
        // Cancelled once it had generated (the prefill ran): say what it generated, token for token,
        // so the job is metered by that and not by max_tokens. Unfinished choices have no finish reason.
        const u = usage()
        if (options.signal?.aborted && u.completionTokens > 0)
          throw generationCancelled({
            model: input.model,
            choices: choices.map((c) => ({
              ...c.text.result(echo),
              ...(c.text.done ? {} : { finishReason: null }),
            })),
            usage: u,
          })
        throw err
      } finally {
        await emitter.drain()
      }
      emitter.throwIfFailed()
      return { model: input.model, choices: choices.map((c) => c.text.result(echo)), usage: usage() }
    } finally {
      lease.release()
    }
  }

  async close(): Promise<void> {
    await this.models.close()
  }
}

/** One choice as the batcher sees it: logits processors → sampler → its text pipeline. */
class Choice implements BatchSequence {
  private readonly ids: number[]

  constructor(
    promptIds: readonly number[],
    private readonly processors: readonly LogitsProcessor[],
    private readonly rng: Rng | null,
    readonly text: TextPipeline,
  ) {
    this.ids = [...promptIds]
  }

  step(logits: Float32Array): { token: number; done: boolean } {
    // Logprobs are of the raw distribution: copied before the processors change the logits in place.
    const raw = this.text.wantsLogits ? logits.slice() : null
    const token = sampleToken(applyProcessors(this.processors, this.ids, logits), this.rng)
    this.ids.push(token)
    return { token, done: this.text.push(token, raw) }
  }
}
