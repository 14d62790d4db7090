/**
 * One onnxruntime session of a decoder-with-past graph, and the KV-cache
 * arithmetic the batcher needs. Only the I/O contract of model-info.ts is
 * assumed: the architecture behind it can be anything Optimum exports.
 *
 * KV layout: per layer a key and a value array [B, KV, S, D] (row-major, the
 * graph's element type; float16 travels as Uint16Array bits). In a batch all
 * rows share the length S; a row with fewer tokens is LEFT-padded: its real
 * positions are the last `len` of S, its attention_mask is 0 on the padding
 * and its position_ids count real tokens only, so every row computes exactly
 * what it would alone (padded keys get a 0 softmax weight).
 */
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import * as ort from 'onnxruntime-node'
import type { Logger } from '../../core/logger.js'
import { fromHfConfig } from '../../models/config.js'
import { exportServingOnnx, isOurExport, weightsFromExport } from '../../models/llama/serving.js'
import { type IoMetadata, type KvDType, type ModelInfo, readModelInfo } from '../../models/model-info.js'
import { DEFAULT_LORA_SLOTS, LoraSlots } from './lora-slots.js'

export type ExecutionProvider = 'tensorrt' | 'cuda' | 'cpu'

export type GraphChoice = 'serving' | 'folder'

export type KvArray = Float32Array | Uint16Array

export interface KvCache {
  batch: number
  /** Positions per row (padding included). */
  length: number
  keys: KvArray[]
  values: KvArray[]
}

/** A row of a batch rebuild: the last `len` positions of row `row` of `src`. */
export interface KvRowSource {
  src: KvCache
  row: number
  len: number
}

export interface ForwardInput {
  batch: number
  /** Tokens per row in this call. */
  seq: number
  /** [batch * seq] */
  inputIds: BigInt64Array
  /** [batch * (past + seq)] */
  attentionMask: BigInt64Array
  /** [batch * seq] */
  positionIds: BigInt64Array
  past: KvCache
  /** [batch] LoRA slot per row (0: the base); LoRA-slot graphs only, default all 0. */
  adapterIndex?: BigInt64Array
}

export interface ForwardOutput {
  /** Logits of the last position of each row, [batch * vocab], float32. */
  logits: Float32Array
  present: KvCache
}

export interface DecoderOptions {
  /** Preference order; CPU is always the last resort. */
  executionProviders?: readonly ExecutionProvider[]
  intraOpNumThreads?: number
  /**
   * Let idle onnxruntime threads spin for work; default false. The JS thread
   * runs the session (onnxruntime-node's run is synchronous) and samples between
   * steps; spinning pool threads take the cores it needs, and on a shared CPU
   * spinning costs 2-5x per step (bench/generation.ts measures it).
   */
  allowSpinning?: boolean
  /** Which graph to prefer when a folder has both; the KV element type is then read from the graph. */
  dtype?: 'fp32' | 'fp16'
  /**
   * 'serving' (default): when the folder's graph is our own float32 export,
   * run the engine's serving graph built from its weights (models/llama/serving.ts:
   * fused attention, a third of the nodes); any other folder, or a failure,
   * runs the folder's graph as it is ('folder').
   */
  graph?: GraphChoice
  logger?: Logger
  /** For tests: how sessions are created. */
  createSession?: (
    path: string | Uint8Array,
    options: ort.InferenceSession.SessionOptions,
  ) => Promise<ort.InferenceSession>
}

/** Candidate graph files, in the order we look for them (fp32 first unless fp16 is preferred). */
export const ONNX_FILES = {
  fp32: ['model.onnx', 'onnx/model.onnx', 'decoder_model_merged.onnx', 'onnx/decoder_model_merged.onnx'],
  fp16: ['model_fp16.onnx', 'onnx/model_fp16.onnx', 'onnx/decoder_model_merged_fp16.onnx'],
}

/**
 * Opens a session with the first execution provider that works, TensorRT →
 * CUDA → CPU as configured. A provider whose library is missing makes
 * `InferenceSession.create` throw; that is logged and the next one is tried.
 */
export async function createSessionWithFallback(
  path: string | Uint8Array,
  o: DecoderOptions = {},
): Promise<{ session: ort.InferenceSession; provider: ExecutionProvider; failed: ExecutionProvider[] }> {
  const wanted = [...(o.executionProviders ?? ['cpu'])]
  if (!wanted.includes('cpu')) wanted.push('cpu')
  const create =
    o.createSession ??
    ((p, opts) =>
      typeof p === 'string' ? ort.InferenceSession.create(p, opts) : ort.InferenceSession.create(p, opts))
  const failed: ExecutionProvider[] = []
  let lastError: unknown
  for (const provider of wanted) {
    const options: ort.InferenceSession.SessionOptions = {
      // GPU providers keep CPU as the per-node fallback for ops they lack.
      executionProviders: provider === 'cpu' ? ['cpu'] : [provider, 'cpu'],
      graphOptimizationLevel: 'all',
      ...(o.intraOpNumThreads ? { intraOpNumThreads: o.intraOpNumThreads } : {}),
      interOpNumThreads: 1,
      ...sessionExtras(o),
    }
    try {
      const session = await create(path, options)
      o.logger?.info(
        { provider, failed, path: typeof path === 'string' ? path : 'serving graph' },
        `onnxruntime session on the ${provider} execution provider`,
      )
      return { session, provider, failed }
    } catch (err) {
      lastError = err
      failed.push(provider)
      o.logger?.warn(
        { provider, err: err instanceof Error ? err.message : String(err) },
        `execution provider ${provider} is not available; falling back`,
      )
    }
  }
  throw lastError
}

/** onnxruntime session config entries (the `extra` option) the engine sets. */
export function sessionExtras(o: Pick<DecoderOptions, 'allowSpinning'>): ort.InferenceSession.SessionOptions {
  const spin = o.allowSpinning ? '1' : '0'
  return { extra: { session: { intra_op: { allow_spinning: spin }, inter_op: { allow_spinning: spin } } } }
}

export class Decoder {
  readonly info: ModelInfo
  /** Bytes of the graph and its external weights (the cache's memory estimate). */
  readonly sizeBytes: number

  constructor(
    readonly session: ort.InferenceSession,
    info: ModelInfo,
    readonly provider: ExecutionProvider,
    sizeBytes: number,
    /** The graph this decoder runs (see `DecoderOptions.graph`). */
    readonly graph: GraphChoice = 'folder',
  ) {
    this.info = info
    this.sizeBytes = sizeBytes
  }

  /** Opens `model.onnx` (or Optimum's names) in a model folder and reads its contract. */
  static async open(folder: string, o: DecoderOptions = {}): Promise<Decoder> {
    let path: string | null = null
    const candidates =
      o.dtype === 'fp16' ? [...ONNX_FILES.fp16, ...ONNX_FILES.fp32] : [...ONNX_FILES.fp32, ...ONNX_FILES.fp16]
    for (const f of candidates) {
      if (await stat(join(folder, f)).catch(() => null)) {
        path = join(folder, f)
        break
      }
    }
    if (!path) throw new Error(`no ONNX graph in the folder (looked for ${candidates.join(', ')})`)
    // Weights may sit beside the graph as external data (`model.onnx_data`, `model.onnx.data`).
    const dir = dirname(path)
    const base = basename(path)
    let sizeBytes = 0
    for (const name of await readdir(dir)) {
      // A published graph may be renamed while its data file keeps its own name: count all data files.
      if (name === base || name.startsWith(base) || /\.onnx_data$|\.onnx\.data$/.test(name))
        sizeBytes += (await stat(join(dir, name))).size
    }
    const config = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8'))
    const generationConfig = JSON.parse(
      await readFile(join(folder, 'generation_config.json'), 'utf8').catch(() => '{}'),
    )
    const serving = o.graph === 'folder' ? null : await servingGraphOf(path, config, o.logger)
    let opened: Awaited<ReturnType<typeof createSessionWithFallback>> | null = null
    if (serving)
      opened = await createSessionWithFallback(serving, o).catch((err) => {
        o.logger?.warn(
          { err: err instanceof Error ? err.message : String(err) },
          'the serving graph did not open; running the folder graph',
        )
        return null
      })
    const graph: GraphChoice = opened ? 'serving' : 'folder'
    const { session, provider } = opened ?? (await createSessionWithFallback(path, o))
    try {
      const info = readModelInfo(
        config,
        session.inputMetadata as readonly IoMetadata[],
        session.outputMetadata as readonly IoMetadata[],
        generationConfig,
      )
      return new Decoder(session, info, provider, sizeBytes, graph)
    } catch (err) {
      await session.release()
      throw err
    }
  }

  emptyCache(batch: number): KvCache {
    const { numLayers } = this.info
    const make = () => allocKv(this.info.kvDType, 0)
    return {
      batch,
      length: 0,
      keys: Array.from({ length: numLayers }, make),
      values: Array.from({ length: numLayers }, make),
    }
  }

  /** One session run; returns the last position's logits per row and the grown cache. */
  async forward(x: ForwardInput): Promise<ForwardOutput> {
    const { info } = this
    const { batch: B, seq: T, past } = x
    const P = past.length
    const H = info.numKvHeads
    const D = info.headDim
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', x.inputIds, [B, T]),
    }
    if (info.hasAttentionMask) feeds.attention_mask = new ort.Tensor('int64', x.attentionMask, [B, P + T])
    if (info.hasPositionIds) feeds.position_ids = new ort.Tensor('int64', x.positionIds, [B, T])
    if (info.useCacheBranch)
      feeds.use_cache_branch = new ort.Tensor('bool', new Uint8Array([P > 0 ? 1 : 0]), [1])
    if (info.logitsToKeepInput)
      feeds[info.logitsToKeepInput] = new ort.Tensor('int64', BigInt64Array.of(1n), [])
    for (let i = 0; i < info.numLayers; i++) {
      feeds[info.pastKeyName(i)] = new ort.Tensor(info.kvDType, past.keys[i], [B, H, P, D])
      feeds[info.pastValueName(i)] = new ort.Tensor(info.kvDType, past.values[i], [B, H, P, D])
    }
    const adapted = x.adapterIndex?.some((i) => i !== 0n) ?? false
    let session = this.session
    if (adapted && this.adapterGraph) {
      // Rows with adapters run the base's LoRA-slot graph; rows of the base alone keep the plain one.
      session = await this.adapterSession(this.adapterGraph)
      Object.assign(feeds, this.adapterGraph.slots.feeds(B, x.adapterIndex))
    } else if (!this.adapterGraph) {
      const own = this.loraSlots()
      if (own) Object.assign(feeds, own.feeds(B, x.adapterIndex))
      else if (adapted) throw new Error('this graph has no LoRA adapter slots')
    }
    const out = await session.run(feeds)
    const logitsTensor = out.logits
    const V = info.vocabSize
    const rows = logitsTensor.dims[1] as number // T, or 1 with logits_to_keep
    const all = logitsTensor.data as Float32Array | Uint16Array
    // One position per row in fp32: the output is already [B, V].
    if (rows === 1 && all instanceof Float32Array)
      return { logits: all, present: this.presentOf(out, B, P + T) }
    const logits = new Float32Array(B * V)
    for (let b = 0; b < B; b++) {
      const start = (b * rows + rows - 1) * V
      const row = all.subarray(start, start + V)
      if (row instanceof Float32Array) logits.set(row, b * V)
      else for (let v = 0; v < V; v++) logits[b * V + v] = halfToFloat(row[v])
    }
    return { logits, present: this.presentOf(out, B, P + T) }
  }

  private presentOf(out: ort.InferenceSession.OnnxValueMapType, batch: number, length: number): KvCache {
    const { info } = this
    const present: KvCache = { batch, length, keys: [], values: [] }
    for (let i = 0; i < info.numLayers; i++) {
      present.keys.push(out[info.presentKeyName(i)].data as KvArray)
      present.values.push(out[info.presentValueName(i)].data as KvArray)
    }
    return present
  }

  /**
   * A new batch from rows of other caches, each right-aligned in `length`
   * positions (left padding filled with zeros). Used when rows join, leave,
   * or when common padding is trimmed.
   */
  rebuild(rows: readonly KvRowSource[], length: number): KvCache {
    const { numLayers, numKvHeads: H, headDim: D } = this.info
    const B = rows.length
    // Fast path: one whole cache, unchanged.
    if (B === 1 && rows[0].src.batch === 1 && rows[0].src.length === length && rows[0].len === length)
      return rows[0].src
    const out: KvCache = { batch: B, length, keys: [], values: [] }
    for (let i = 0; i < numLayers; i++) {
      for (const kind of ['keys', 'values'] as const) {
        const dst = allocKv(this.info.kvDType, B * H * length * D)
        rows.forEach(({ src, row, len }, r) => {
          if (len > length || len > src.length) throw new Error('KvCache.rebuild: row longer than the target')
          const srcArr = src[kind][i]
          for (let h = 0; h < H; h++) {
            const from = ((row * H + h) * src.length + (src.length - len)) * D
            const to = ((r * H + h) * length + (length - len)) * D
            dst.set(srcArr.subarray(from, from + len * D), to)
          }
        })
        out[kind].push(dst)
      }
    }
    return out
  }

  async release(): Promise<void> {
    await this.session.release()
    const adapter = await this.adapterGraph?.session?.catch(() => null)
    await adapter?.release()
  }

  private loraState: LoraSlots | null | undefined
  private adapterGraph: AdapterGraph | undefined

  /**
   * Serves rows that carry an adapter on a second graph: the base's LoRA-slot
   * graph, opened by `open` on the first such row. Batches of the base alone
   * keep running this decoder's own graph, which has no adapter terms (they
   * cost a LoRA-slot graph 20-50% per step even when every slot is empty).
   * Both graphs share the KV-cache layout, so one batch may move between them
   * from step to step. `slots` must match the graph's adapter inputs.
   */
  attachAdapterGraph(slots: LoraSlots, open: () => Promise<ort.InferenceSession>): void {
    this.adapterGraph = { slots, open }
  }

  /** Whether rows with adapters have run (the LoRA-slot graph is open or opening). */
  get adapterGraphOpened(): boolean {
    return this.adapterGraph?.session !== undefined
  }

  private adapterSession(g: AdapterGraph): Promise<ort.InferenceSession> {
    g.session ??= g.open().then((session) => {
      const inputs = LoraSlots.fromInputs(session.inputMetadata as readonly IoMetadata[], g.slots.capacity)
      const same =
        inputs !== null &&
        inputs.sites.size === g.slots.sites.size &&
        JSON.stringify(inputs.tokens) === JSON.stringify(g.slots.tokens) &&
        [...g.slots.sites].every(([k, s]) => {
          const t = inputs.sites.get(k)
          return t !== undefined && t.inDim === s.inDim && t.outDim === s.outDim
        })
      if (!same) {
        void session.release()
        throw new Error('the LoRA-slot graph does not have the adapter inputs its slots were made for')
      }
      return session
    })
    // A failed open is retried by the next adapter row rather than cached.
    g.session.catch(() => {
      if (this.adapterGraph === g) g.session = undefined
    })
    return g.session
  }

  /**
   * The stacked adapter slots of a LoRA-slot graph (models/llama/graph.ts
   * `loraSlotLinear`), or null for any other graph. The first call fixes the
   * number of slots; `forward` feeds them (every row on slot 0 unless told).
   */
  loraSlots(capacity = DEFAULT_LORA_SLOTS): LoraSlots | null {
    if (this.adapterGraph) return this.adapterGraph.slots
    if (this.loraState === undefined)
      this.loraState = LoraSlots.fromInputs(this.session.inputMetadata as readonly IoMetadata[], capacity)
    return this.loraState
  }
}

/**
 * The serving graph for a folder whose graph is our own float32 export of a
 * Llama (weights read back from it), else null: BYO graphs, fp16 and external
 * data run as they are.
 */
async function servingGraphOf(path: string, config: unknown, logger?: Logger): Promise<Uint8Array | null> {
  if (!ONNX_FILES.fp32.includes(relativeGraphName(path))) return null
  try {
    const c = fromHfConfig(config)
    const head = Buffer.alloc(64)
    const file = await open(path, 'r')
    await file.read(head, 0, 64, 0).finally(() => file.close())
    if (!isOurExport(head)) return null
    const weights = weightsFromExport(await readFile(path), c)
    return weights ? exportServingOnnx(weights, c) : null
  } catch (err) {
    logger?.debug(
      { err: err instanceof Error ? err.message : String(err) },
      'no serving graph for this folder',
    )
    return null
  }
}

const relativeGraphName = (path: string) =>
  basename(dirname(path)) === 'onnx' ? `onnx/${basename(path)}` : basename(path)

interface AdapterGraph {
  slots: LoraSlots
  open: () => Promise<ort.InferenceSession>
  session?: Promise<ort.InferenceSession>
}

const allocKv = (dtype: KvDType, n: number): KvArray =>
  dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n)

/** IEEE 754 half bits to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >> 10) & 0x1f
  const frac = h & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY
  return sign * (1 + frac / 1024) * 2 ** (exp - 15)
}
