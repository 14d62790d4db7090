/**
 * The models a worker serves: model folders from the ObjectStore
 * (model-cache.ts, which also counts cache lookups and load times and evicts
 * under a memory budget), and for each model id what serves it: one
 * onnxruntime session (decoder.ts, with the serving graph of our own exports)
 * and one continuous batcher (batcher.ts) per open model. Fine-tunes
 * published as LoRA adapters (core/model-manifest.ts `isAdapterManifest`)
 * run beside their base: our Llama bases open with a graph that has stacked
 * adapter slots (lora-graph.ts), `acquire` puts the adapter in a slot
 * (lora-slots.ts), and requests of the base and of all its fine-tunes share
 * the base's session and batcher, each row on its own slot. An adapter its
 * base cannot take is merged into the base and served as a model of its own.
 *
 * Everything here that touches onnxruntime; the text of a choice is
 * text-pipeline.ts, and engine.ts joins the two.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import {
  ADAPTER_WEIGHTS_PATH,
  isAdapterManifest,
  MODEL_ID_PATTERN,
  type ModelManifest,
  readManifest,
} from '../../core/model-manifest.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import { ADAPTER_FILES, loadAdapter } from '../../models/train/lora.js'
import { Batcher } from './batcher.js'
import {
  createSessionWithFallback,
  Decoder,
  type DecoderOptions,
  type ExecutionProvider,
  type GraphChoice,
} from './decoder.js'
import { modelLoadFailed } from './errors.js'
import {
  ADAPTER_SERVING_MODULES,
  ADAPTER_SERVING_TOKENS,
  loraGraphFor,
  mergedFolderFor,
  ourLlamaExport,
} from './lora-graph.js'
import {
  AdapterSlotPool,
  DEFAULT_LORA_MAX_RANK,
  DEFAULT_LORA_SLOTS,
  LoraSlots,
  loraSites,
  type SlotAdapter,
  slotAdapterOf,
} from './lora-slots.js'
import { type Lease, ModelCache } from './model-cache.js'
import { loadTokenizer, type ModelTokenizer } from './tokenizer.js'

export interface ModelRegistryOptions {
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
  /** 'serving' (default): the engine's fused graph for our own models; 'folder': always the folder's graph. */
  graph?: GraphChoice
  /**
   * LoRA adapter slots per base model, slot 0 (the base) included; default 8.
   * 0 or 1 (or `graph: 'folder'`): bases run their own graph and adapter
   * fine-tunes are served merged into their base, each as a model of its own.
   */
  loraSlots?: number
  /** Largest adapter rank a slot takes (larger ones are served merged); default 64. */
  loraMaxRank?: number
  /** Memory budget for adapters kept on the host, bytes; default 256 MiB. */
  adapterBudgetBytes?: number
  logger?: Logger
  metrics?: Metrics
}

/** An open model: everything a request needs. */
export interface LoadedModel {
  id: string
  decoder: Decoder
  tokenizer: ModelTokenizer
  batcher: Batcher
  contextLength: number
  eosTokenIds: ReadonlySet<number>
  /** The local folder it was opened from. */
  folder: string
  /** The adapter slots of a base opened with its LoRA-slot graph; null otherwise. */
  adapterSlots: AdapterSlotPool | null
  /** The slot this model's rows run on: 0 for a model itself, k for a fine-tune in slot k of its base. */
  adapterIndex: number
}

/** A fine-tune published as a LoRA adapter, ready to go into a slot of its base. */
export interface LoadedAdapter {
  id: string
  base: string
  /** Identity in the slots: the id and the adapter's checksum. */
  key: string
  adapter: SlotAdapter
  contextLength: number
}

export class ModelRegistry {
  /** Open models (bases, and fine-tunes served merged). */
  readonly cache: ModelCache<LoadedModel>
  /** Adapters of fine-tunes served beside their base (host copies; small). */
  readonly adapters: ModelCache<LoadedAdapter>
  private readonly o: ModelRegistryOptions
  private readonly kinds = new Map<string, 'model' | 'adapter'>()

  constructor(o: ModelRegistryOptions) {
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
    this.adapters = new ModelCache<LoadedAdapter>({
      store: o.store,
      dir: o.cacheDir,
      budgetBytes: o.adapterBudgetBytes ?? 256 * 1024 * 1024,
      logger: o.logger,
      metrics: o.metrics,
      open: (folder, manifest) => this.openAdapter(folder, manifest),
      sizeOf: (a) => a.adapter.bytes,
      dispose: () => {},
    })
  }

  /** Rows one model's batcher decodes together (a request's n choices count as n rows). */
  get maxBatchSize(): number {
    return this.o.maxBatchSize ?? 32
  }

  private get loraSlotCount(): number {
    return this.o.loraSlots ?? DEFAULT_LORA_SLOTS
  }

  /**
   * A lease on a model ready to generate: a model of its own, or a fine-tune
   * published as an adapter, in a slot of its base (the lease holds the
   * adapter, the base and the slot). An adapter that cannot take a slot of
   * its base is served merged into the base, as a model of its own.
   */
  async acquire(id: string, signal?: AbortSignal): Promise<Lease<LoadedModel>> {
    if ((await this.kindOf(id)) === 'model') return this.cache.acquire(id)
    const held: Array<{ release(): void }> = []
    const release = () => {
      for (const h of held.splice(0).reverse()) h.release()
    }
    try {
      const adapter = await this.adapters.acquire(id)
      held.push(adapter)
      const a = adapter.model
      if ((await this.kindOf(a.base)) !== 'model')
        throw modelLoadFailed(id, `its base model '${a.base}' is not a model of its own`)
      const base = await this.cache.acquire(a.base)
      held.push(base)
      const pool = base.model.adapterSlots
      const unfit = pool ? pool.unfit(a.adapter) : 'the base model has no adapter slots'
      if (!pool || unfit) {
        this.o.logger?.info(
          { model: id, base: a.base, reason: unfit },
          'serving the fine-tune merged into its base',
        )
        release()
        return await this.cache.acquire(id)
      }
      const slot = await pool.acquire(a.key, a.adapter, signal)
      held.push(slot)
      const contextLength = Math.min(base.model.contextLength, a.contextLength)
      return { id, model: { ...base.model, id, contextLength, adapterIndex: slot.index }, release }
    } catch (err) {
      release()
      throw err
    }
  }

  /** Whether `id` is a model of its own or an adapter fine-tune (remembered once its manifest is read). */
  private async kindOf(id: string): Promise<'model' | 'adapter'> {
    const known = this.kinds.get(id)
    if (known) return known
    // A missing or unreadable manifest: the model cache reports what is wrong.
    const m = MODEL_ID_PATTERN.test(id) ? await readManifest(this.o.store, id).catch(() => null) : null
    if (!m) return 'model'
    const kind = isAdapterManifest(m) ? 'adapter' : 'model'
    this.kinds.set(id, kind)
    return kind
  }

  private async openAdapter(folder: string, manifest: ModelManifest): Promise<LoadedAdapter> {
    const base = manifest.base_model
    if (!base) throw new Error('the manifest names no base model')
    const dir = join(folder, 'adapter')
    const { adapters, lora } = await loadAdapter(dir)
    // The adapter was trained on the base's weights as they were: refuse a base republished since.
    const { revision } = JSON.parse(await readFile(join(dir, ADAPTER_FILES.config), 'utf8')) as {
      revision?: string | null
    }
    if (revision) {
      const baseManifest = await readManifest(this.o.store, base)
      const now = baseManifest?.files.find((f) => f.path === 'model.safetensors')?.sha256
      if (now !== revision)
        throw new Error(
          `its base model '${base}' has changed since it was trained (weights ${revision.slice(0, 12)}…)`,
        )
    }
    const sha =
      manifest.files.find((f) => f.path === ADAPTER_WEIGHTS_PATH)?.sha256 ?? String(manifest.created)
    return {
      id: manifest.id,
      base,
      key: `${manifest.id}@${sha.slice(0, 16)}`,
      adapter: slotAdapterOf(adapters, lora),
      contextLength: manifest.context_length,
    }
  }

  private async openModel(folder: string, manifest: ModelManifest): Promise<LoadedModel> {
    if (isAdapterManifest(manifest)) {
      // The fallback for an adapter its base cannot take in a slot: merge it, serve the result alone.
      const base = await this.cache.acquire(manifest.base_model!)
      let merged: string
      try {
        merged = await mergedFolderFor(folder, base.model.folder)
      } finally {
        base.release()
      }
      return this.openFolder(merged, manifest, false)
    }
    return this.openFolder(folder, manifest, this.loraSlotCount >= 2 && this.o.graph !== 'folder')
  }

  private async openFolder(folder: string, manifest: ModelManifest, slots: boolean): Promise<LoadedModel> {
    const logger = this.o.logger?.child({ model: manifest.id })
    const options: DecoderOptions = {
      executionProviders: this.o.executionProviders,
      intraOpNumThreads: this.o.intraOpNumThreads,
      dtype: this.o.dtype,
      graph: this.o.graph,
      allowSpinning: this.o.allowSpinning,
      logger,
    }
    const [decoder, tokenizer] = await Promise.all([Decoder.open(folder, options), loadTokenizer(folder)])
    const loraSlots = slots ? await this.adapterSlotsFor(folder, decoder, options) : null
    const adapterSlots = loraSlots
      ? new AdapterSlotPool(loraSlots, {
          maxRank: this.o.loraMaxRank ?? DEFAULT_LORA_MAX_RANK,
          base: manifest.id,
          logger: this.o.logger,
        })
      : null
    if (adapterSlots) logger?.info({ slots: loraSlots!.capacity - 1 }, 'model opened with LoRA adapter slots')
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
      folder,
      adapterSlots,
      adapterIndex: 0,
    }
  }

  /**
   * Adapter slots for one of our Llama folders (null for other folders:
   * fine-tunes of those are served merged). The base keeps its own graph;
   * the LoRA-slot graph (the fused serving graph with slots, else the
   * export's) is built and opened when the first row with an adapter runs.
   */
  private async adapterSlotsFor(
    folder: string,
    decoder: Decoder,
    options: DecoderOptions,
  ): Promise<LoraSlots | null> {
    const ours = await ourLlamaExport(folder, this.o.dtype)
    if (!ours || ours.dtype !== decoder.info.kvDType) return null
    const slots = new LoraSlots(
      loraSites(ours.config, ADAPTER_SERVING_MODULES),
      ours.dtype,
      this.loraSlotCount,
      ADAPTER_SERVING_TOKENS ? { vocab: ours.config.vocabSize, hidden: ours.config.hiddenSize } : null,
    )
    decoder.attachAdapterGraph(slots, async () => {
      let lastError: unknown
      for (const graph of ['serving', 'export'] as const) {
        try {
          const path = await loraGraphFor(folder, { dtype: this.o.dtype, graph })
          if (!path) throw new Error('not one of our Llama exports')
          const { session } = await createSessionWithFallback(path, options)
          options.logger?.info({ graph }, 'LoRA-slot graph opened for adapter rows')
          return session
        } catch (err) {
          lastError = err
          options.logger?.warn({ err, graph }, 'the LoRA-slot graph did not open')
        }
      }
      throw lastError
    })
    return slots
  }

  /** Closes every open model (its batcher fails what is waiting or running). */
  async close(): Promise<void> {
    await this.cache.close()
  }
}
