/**
 * Graphs for serving LoRA fine-tunes beside their base:
 *
 * - `loraGraphFor(folder)`: for one of our Llama folders (config.json,
 *   model.safetensors, a graph our exporter wrote), the decoder rebuilt from
 *   the safetensors with stacked LoRA slots on `ADAPTER_SERVING_MODULES` and
 *   trainable-token slots (models/llama/graph.ts `loraSlotHooks`): the engine's fused serving graph
 *   (models/llama/serving.ts) in float32, else the export's graph; written
 *   once beside the cached folder. Any other folder (bring-your-own ONNX)
 *   gets null and is served with its own graph.
 * - `writeAdapterFolder`: how a fine-tune is published to be served that way:
 *   the base's config, generation config and tokenizer, a model card, and
 *   `adapter/` in PEFT's layout whose `revision` is the SHA-256 of the base's
 *   model.safetensors (a base republished since is refused at load).
 * - `mergedFolderFor(adapter, base)`: the fallback for an adapter fine-tune
 *   whose base has no slots (or whose adapter does not fit them): the adapter
 *   merged into the base's weights, written as a complete model folder.
 *
 * Both are built in a temporary path and renamed into place, so a crash or a
 * second worker process never sees a half-written file.
 */
import { createHash, randomBytes } from 'node:crypto'
import { copyFile, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fromHfConfig, type LlamaConfig } from '../../models/config.js'
import { readModelFolder, writeModelFolder } from '../../models/folder.js'
import { fuseSiblingMatMuls } from '../../models/graph/fuse.js'
import { serializeGraph } from '../../models/graph/onnx.js'
import { buildLlamaGraph, type FloatDType, type Projection } from '../../models/llama/graph.js'
import { exportServingOnnx } from '../../models/llama/serving.js'
import { checkWeights } from '../../models/llama/weights.js'
import { readSafetensors, type Weights } from '../../models/safetensors.js'
import {
  ADAPTER_FILES,
  type LoraConfig,
  loadAdapter,
  mergeLora,
  saveAdapter,
} from '../../models/train/lora.js'
import { ONNX_FILES } from './decoder.js'
import { exists } from './model-cache.js'

/** Projections that get adapter slots in a served base (fine-tuning targets the same ones). */
export const ADAPTER_SERVING_MODULES: Projection[] = ['q_proj', 'v_proj', 'up_proj', 'down_proj']
/** A served base's slots take trainable-token deltas too (fine-tuning trains them: models/train/lora.ts). */
export const ADAPTER_SERVING_TOKENS = true

/** Bumped when the LoRA-slot graph changes, so cached files of an older build are not reused. */
const LORA_GRAPH_VERSION = 2
const PRODUCER = 'prometheus-gpt'
const BUILT_MARKER = '.built'

export interface OurExport {
  config: LlamaConfig
  /** The graph Decoder.open would pick. */
  graph: string
  dtype: FloatDType
}

/**
 * The folder's config and graph when it is one of our Llama exports
 * (config.json our Llama config, model.safetensors, and the graph the
 * decoder would open written by our exporter), else null.
 */
export async function ourLlamaExport(folder: string, dtype?: 'fp32' | 'fp16'): Promise<OurExport | null> {
  const candidates =
    dtype === 'fp16' ? [...ONNX_FILES.fp16, ...ONNX_FILES.fp32] : [...ONNX_FILES.fp32, ...ONNX_FILES.fp16]
  let graph: string | null = null
  for (const f of candidates)
    if (await exists(join(folder, f))) {
      graph = f
      break
    }
  if (!graph || !(await exists(join(folder, 'model.safetensors')))) return null
  if (!(await producedByUs(join(folder, graph)))) return null
  let config: LlamaConfig
  try {
    config = fromHfConfig(JSON.parse(await readFile(join(folder, 'config.json'), 'utf8')))
  } catch {
    return null
  }
  return { config, graph, dtype: ONNX_FILES.fp16.includes(graph) ? 'float16' : 'float32' }
}

/** Whether fine-tunes of the model in `folder` can be served as adapters beside it. */
export async function adapterServable(folder: string): Promise<boolean> {
  return (await ourLlamaExport(folder)) !== null
}

export interface LoraGraphOptions {
  /** The graph the folder's decoder would prefer; default fp32. */
  dtype?: 'fp32' | 'fp16'
  /**
   * 'serving' (default): the engine's fused serving graph (float32 only; an
   * fp16 folder gets the export's); 'export': the export's graph.
   */
  graph?: 'serving' | 'export'
}

/**
 * The path of the folder's LoRA-slot graph (built on first use, then reused),
 * or null when the folder is not one of our Llama exports.
 */
export async function loraGraphFor(folder: string, o: LoraGraphOptions = {}): Promise<string | null> {
  const ours = await ourLlamaExport(folder, o.dtype)
  if (!ours) return null
  const graph = o.graph === 'export' || ours.dtype === 'float16' ? 'export' : 'serving'
  const target = `${folder}.lora-v${LORA_GRAPH_VERSION}-${graph}-${ours.dtype}.onnx`
  if (await exists(target)) return target
  const weights = readSafetensors(await readFile(join(folder, 'model.safetensors'))).tensors
  checkWeights(weights, ours.config)
  const lora = { modules: ADAPTER_SERVING_MODULES, tokens: ADAPTER_SERVING_TOKENS }
  let bytes: Uint8Array
  if (graph === 'serving') bytes = exportServingOnnx(weights, ours.config, ours.dtype, { lora })
  else {
    const g = buildLlamaGraph(weights, ours.config, ours.dtype, { lora })
    fuseSiblingMatMuls(g)
    bytes = serializeGraph(g, {
      docString: 'PrometheusGPT decoder with stacked LoRA slots (engine-built)',
      metadata: { model_type: 'llama', graph: 'lora-slots', version: String(LORA_GRAPH_VERSION) },
    })
  }
  await intoPlace(target, (tmp) => writeFile(tmp, bytes))
  return target
}

/** Files of the base folder an adapter folder carries (what the edge and the tokenizer read). */
const SHARED_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
]

export interface AdapterFolder {
  /** The base model's local folder (config, tokenizer and weights are read from it). */
  baseFolder: string
  /** The base model's id, written as the adapter's base_model_name_or_path. */
  baseModel: string
  adapters: Weights
  lora: LoraConfig
  /** README.md text. */
  card: string
}

/** Writes a fine-tune as an adapter folder (no weights or graph of its own). */
export async function writeAdapterFolder(dir: string, o: AdapterFolder): Promise<void> {
  await mkdir(dir, { recursive: true })
  for (const f of SHARED_FILES)
    if (await exists(join(o.baseFolder, f))) await copyFile(join(o.baseFolder, f), join(dir, f))
  const adapterDir = join(dir, 'adapter')
  await saveAdapter(adapterDir, o.adapters, o.lora, o.baseModel)
  const weights = await readFile(join(o.baseFolder, 'model.safetensors'))
  const configPath = join(adapterDir, ADAPTER_FILES.config)
  const config = JSON.parse(await readFile(configPath, 'utf8'))
  config.revision = createHash('sha256').update(weights).digest('hex')
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`)
  await writeFile(join(dir, 'README.md'), o.card)
}

/** A complete model folder: the adapter fine-tune in `adapterFolder` merged into its base's weights. */
export async function mergedFolderFor(adapterFolder: string, baseFolder: string): Promise<string> {
  const target = `${adapterFolder}.merged-v${LORA_GRAPH_VERSION}`
  if (await exists(join(target, BUILT_MARKER))) return target
  const base = await readModelFolder(baseFolder)
  const { adapters, lora } = await loadAdapter(join(adapterFolder, 'adapter'))
  await intoPlace(target, async (tmp) => {
    await writeModelFolder(tmp, {
      config: base.config,
      weights: mergeLora(base.config, base.weights, adapters, lora),
      tokenizer: base.tokenizer,
      generationConfig: base.generationConfig,
    })
    await writeFile(join(tmp, BUILT_MARKER), `${new Date().toISOString()}\n`)
  })
  return target
}

/** Builds at a temporary path, then renames to `target`; another process finishing first wins. */
async function intoPlace(target: string, build: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
  try {
    await build(tmp)
    try {
      await rename(tmp, target)
    } catch (err) {
      if (!(await exists(target))) throw err
    }
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

/** Our exporter writes its producer name in the first bytes of the ModelProto. */
async function producedByUs(path: string): Promise<boolean> {
  const head = Buffer.alloc(64)
  const file = await open(path, 'r')
  try {
    await file.read(head, 0, head.length, 0)
  } finally {
    await file.close()
  }
  return head.toString('latin1').includes(PRODUCER)
}
