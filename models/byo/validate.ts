/**
 * Is a model folder servable? The checks run before anything is stored and
 * each failure names what is wrong: a missing file, an ONNX graph that cannot
 * be read, inputs or outputs outside the decoder-with-past contract, element
 * types the engine cannot feed, missing external data, a tokenizer larger than
 * the model's vocabulary, a tokenizer regex or a chat template that would not
 * run in bounded time (models/byo/text-safety.ts).
 *
 * The contract is the one the generation engine reads
 * (models/model-info.ts, whose `readModelInfo` runs here too, so a
 * folder that passes is a folder the engine opens):
 *
 *   input_ids [B,S] int64, attention_mask [B,P+S] int64, position_ids [B,S] int64 (optional),
 *   past_key_values.{i}.key|value [B,KV,P,D] float32|float16
 *   → logits [B,S,V], present.{i}.key|value [B,KV,P+S,D]
 *
 * (plus Optimum's optional `use_cache_branch` and `num_logits_to_keep`). The
 * attention mask is required: the engine batches left-padded rows.
 */
import { type ModelInfo, ModelInfoError, readModelInfo } from '../model-info.js'
import { type OnnxIo, OnnxReadError, readOnnxInterface } from './onnx-interface.js'
import { type FolderSource, isSafeRelativePath } from './source.js'
import { chatTemplateProblems, tokenizerRegexProblems } from './text-safety.js'

/** Graph files looked for when none is named, in order (the engine's names, workers/generation/decoder.ts). */
export const GRAPH_CANDIDATES = [
  'onnx/model.onnx',
  'model.onnx',
  'onnx/decoder_model_merged.onnx',
  'decoder_model_merged.onnx',
  'onnx/model_fp16.onnx',
  'model_fp16.onnx',
  'onnx/decoder_model_merged_fp16.onnx',
] as const

/** Names the engine opens as they are; any other chosen graph is stored as `onnx/model.onnx`. */
const ENGINE_GRAPH_NAMES = new Set<string>(GRAPH_CANDIDATES)

/** Small files that travel with the graph; everything else (safetensors, other graphs) stays behind. */
export const METADATA_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'README.md',
] as const

/** Inputs the engine knows how to feed, besides `past_key_values.{i}.key|value`. */
const FED_INPUTS = new Set([
  'input_ids',
  'attention_mask',
  'position_ids',
  'use_cache_branch',
  'num_logits_to_keep',
  'logits_to_keep',
])

export class ModelValidationError extends Error {
  override readonly name = 'ModelValidationError'
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? `model folder is not servable: ${problems[0]}`
        : `model folder is not servable:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    )
  }
}

export interface ValidateOptions {
  /** The ONNX graph to serve (relative path); default: the first of GRAPH_CANDIDATES present. */
  onnx?: string
}

export interface ValidatedModel {
  /** The graph that was checked (path in the folder). */
  graph: string
  /** What to upload: folder path → stored path. */
  files: Array<{ from: string; to: string }>
  /** Files in the folder that are not uploaded (weights in other formats, other graphs). */
  skipped: string[]
  info: ModelSummary
}

export interface ModelSummary {
  layers: number
  kvHeads: number
  headDim: number
  vocabSize: number
  contextLength: number
  dtype: 'float32' | 'float16'
  positionIds: boolean
  externalData: string[]
  chatTemplate: boolean
  eosTokenIds: number[]
  tokenizerVocabSize: number
}

type Json = Record<string, unknown>

const KV_INPUT = /^past_key_values\.(\d+)\.(key|value)$/
const KV_OUTPUT = /^(present|present_key_values)\.(\d+)\.(key|value)$/

/** Validates a model folder; throws ModelValidationError listing every problem found. */
export async function validateModelFolder(
  src: FolderSource,
  o: ValidateOptions = {},
): Promise<ValidatedModel> {
  const files = new Set(await src.list())
  const problems: string[] = []

  const readJson = async (path: string, required: boolean): Promise<Json | null> => {
    if (!files.has(path)) {
      if (required) problems.push(`missing file '${path}'`)
      return null
    }
    const bytes = await src.read(path)
    try {
      const v = JSON.parse(new TextDecoder().decode(bytes ?? new Uint8Array()))
      if (v && typeof v === 'object' && !Array.isArray(v)) return v as Json
      problems.push(`'${path}' is not a JSON object`)
    } catch (err) {
      problems.push(`'${path}' is not valid JSON (${err instanceof Error ? err.message : err})`)
    }
    return null
  }

  const config = await readJson('config.json', true)
  const tokenizer = await readJson('tokenizer.json', true)
  const tokenizerConfig = await readJson('tokenizer_config.json', false)
  const generationConfig = await readJson('generation_config.json', false)

  // The graph.
  let graph: string | undefined
  if (o.onnx !== undefined) {
    if (!isSafeRelativePath(o.onnx))
      problems.push(`the ONNX path '${o.onnx}' is not a relative path inside the folder`)
    else if (!files.has(o.onnx)) problems.push(`missing file '${o.onnx}' (the ONNX graph asked for)`)
    else graph = o.onnx
  } else {
    graph = GRAPH_CANDIDATES.find((c) => files.has(c))
    if (!graph)
      problems.push(
        `missing file 'onnx/model.onnx' (no ONNX graph; looked for ${GRAPH_CANDIDATES.join(', ')})`,
      )
  }

  let io: { inputs: OnnxIo[]; outputs: OnnxIo[]; externalData: string[] } | undefined
  if (graph) {
    try {
      io = readOnnxInterface((await src.read(graph)) ?? new Uint8Array())
    } catch (err) {
      problems.push(
        `'${graph}' is not a readable ONNX model: ${err instanceof OnnxReadError ? err.message : err}`,
      )
    }
  }

  const graphDir = graph?.includes('/') ? graph.slice(0, graph.lastIndexOf('/') + 1) : ''
  if (io) {
    problems.push(...contractProblems(io.inputs, io.outputs))
    for (const loc of io.externalData) {
      if (!isSafeRelativePath(loc))
        problems.push(`the graph points to external data outside the folder: '${loc}'`)
      else if (!files.has(graphDir + loc))
        problems.push(`missing file '${graphDir + loc}' (external data of '${graph}')`)
    }
  }

  let info: ModelInfo | undefined
  if (io && config && !problems.length) {
    try {
      const meta = (v: OnnxIo) => ({ ...v, isTensor: v.type !== 'non-tensor' })
      info = readModelInfo(config, io.inputs.map(meta), io.outputs.map(meta), generationConfig ?? {})
    } catch (err) {
      if (!(err instanceof ModelInfoError)) throw err
      problems.push(err.message)
    }
  }

  let tokenizerVocabSize = 0
  if (tokenizer) {
    tokenizerVocabSize = tokenizerSize(tokenizer)
    if (tokenizerVocabSize === 0) problems.push(`'tokenizer.json' has no vocabulary (model.vocab)`)
    problems.push(...tokenizerRegexProblems(tokenizer))
  }
  problems.push(...(await templateProblems(src, files, tokenizerConfig)))
  if (info && config) problems.push(...configProblems(config, info, io!.inputs))
  if (info && tokenizerVocabSize > info.vocabSize)
    problems.push(
      `vocabulary mismatch: the tokenizer has ${tokenizerVocabSize} tokens (ids 0..${tokenizerVocabSize - 1}), the model's logits have ${info.vocabSize}`,
    )
  if (info) {
    const bad = info.eosTokenIds.filter((id) => id < 0 || id >= info!.vocabSize)
    if (bad.length)
      problems.push(`eos_token_id ${bad.join(', ')} is outside the vocabulary of ${info.vocabSize} tokens`)
  }

  if (problems.length || !graph || !io || !info) throw new ModelValidationError(problems)

  const storedGraph = ENGINE_GRAPH_NAMES.has(graph) ? graph : 'onnx/model.onnx'
  const storedDir = storedGraph.includes('/') ? storedGraph.slice(0, storedGraph.lastIndexOf('/') + 1) : ''
  const upload: Array<{ from: string; to: string }> = [{ from: graph, to: storedGraph }]
  for (const loc of io.externalData) upload.push({ from: graphDir + loc, to: storedDir + loc })
  for (const f of METADATA_FILES) if (files.has(f)) upload.push({ from: f, to: f })
  const uploaded = new Set(upload.map((u) => u.from))
  const chatTemplate =
    typeof tokenizerConfig?.chat_template === 'string' ||
    Array.isArray(tokenizerConfig?.chat_template) ||
    files.has('chat_template.jinja')

  return {
    graph,
    files: upload,
    skipped: [...files].filter((f) => !uploaded.has(f)).sort(),
    info: {
      layers: info.numLayers,
      kvHeads: info.numKvHeads,
      headDim: info.headDim,
      vocabSize: info.vocabSize,
      contextLength: info.contextLength,
      dtype: info.kvDType,
      positionIds: info.hasPositionIds,
      externalData: io.externalData.map((l) => storedDir + l),
      chatTemplate,
      eosTokenIds: info.eosTokenIds,
      tokenizerVocabSize,
    },
  }
}

/** Names and element types against the decoder-with-past contract. */
export function contractProblems(inputs: readonly OnnxIo[], outputs: readonly OnnxIo[]): string[] {
  const problems: string[] = []
  const ins = new Map(inputs.map((i) => [i.name, i]))
  const outs = new Map(outputs.map((o) => [o.name, o]))
  for (const name of ['input_ids', 'attention_mask'])
    if (!ins.has(name))
      problems.push(`the graph has no '${name}' input (inputs: ${[...ins.keys()].join(', ')})`)
  if (!outs.has('logits'))
    problems.push(`the graph has no 'logits' output (outputs: ${[...outs.keys()].join(', ')})`)

  const unknownIn = [...ins.keys()].filter((n) => !FED_INPUTS.has(n) && !KV_INPUT.test(n))
  if (unknownIn.length) problems.push(`the graph has inputs outside the contract: ${unknownIn.join(', ')}`)

  const pastLayers = new Set(
    [...ins.keys()].flatMap((n) => (KV_INPUT.exec(n) ? [Number(KV_INPUT.exec(n)![1])] : [])),
  )
  const presentMatches = [...outs.keys()].map((n) => KV_OUTPUT.exec(n)).filter((m) => m !== null)
  if (!pastLayers.size)
    problems.push(
      `the graph has no 'past_key_values.{i}.key|value' inputs (it must be exported with past, e.g. Optimum's text-generation-with-past)`,
    )
  if (!presentMatches.length) problems.push(`the graph has no 'present.{i}.key|value' outputs`)
  const prefixes = new Set(presentMatches.map((m) => m![1]))
  if (prefixes.size > 1) problems.push(`the graph mixes 'present.{i}' and 'present_key_values.{i}' outputs`)
  const prefix = [...prefixes][0] ?? 'present'
  const layers = Math.max(-1, ...pastLayers, ...presentMatches.map((m) => Number(m![2]))) + 1
  const missingIn: string[] = []
  const missingOut: string[] = []
  for (let i = 0; i < layers; i++)
    for (const kind of ['key', 'value']) {
      if (pastLayers.size && !ins.has(`past_key_values.${i}.${kind}`))
        missingIn.push(`past_key_values.${i}.${kind}`)
      if (presentMatches.length && !outs.has(`${prefix}.${i}.${kind}`))
        missingOut.push(`${prefix}.${i}.${kind}`)
    }
  if (missingIn.length) problems.push(`the graph lacks inputs ${missingIn.join(', ')}`)
  if (missingOut.length) problems.push(`the graph lacks outputs ${missingOut.join(', ')}`)

  // Element types.
  for (const name of ['input_ids', 'attention_mask', 'position_ids']) {
    const t = ins.get(name)?.type
    if (t !== undefined && t !== 'int64')
      problems.push(`unsupported element type '${t}' for input '${name}' (int64 expected)`)
  }
  const floats = new Set(['float32', 'float16'])
  const kv = [
    ...inputs.filter((i) => KV_INPUT.test(i.name)),
    ...outputs.filter((o) => KV_OUTPUT.test(o.name)),
  ]
  const logits = outs.get('logits')
  for (const v of [...kv, ...(logits ? [logits] : [])])
    if (!floats.has(v.type))
      problems.push(`unsupported element type '${v.type}' for '${v.name}' (float32 or float16 expected)`)
  const kvTypes = new Set(kv.map((v) => v.type).filter((t) => floats.has(t)))
  if (kvTypes.size > 1) problems.push(`the KV cache mixes element types (${[...kvTypes].join(', ')})`)
  for (const v of kv)
    if (v.shape.length !== 4)
      problems.push(
        `'${v.name}' has rank ${v.shape.length}, expected 4 [batch, kv_heads, positions, head_dim]`,
      )
  if (logits && logits.shape.length !== 3)
    problems.push(`'logits' has rank ${logits.shape.length}, expected 3 [batch, sequence, vocab]`)
  return problems
}

/** config.json against what the graph says, where both say something. */
function configProblems(c: Json, info: ModelInfo, inputs: readonly OnnxIo[]): string[] {
  const cfg = c.text_config && typeof c.text_config === 'object' ? { ...c, ...(c.text_config as Json) } : c
  const num = (...keys: string[]) => {
    for (const k of keys) if (typeof cfg[k] === 'number') return cfg[k] as number
    return undefined
  }
  const problems: string[] = []
  const vocab = num('vocab_size', 'n_vocab', 'padded_vocab_size')
  if (vocab !== undefined && vocab !== info.vocabSize)
    problems.push(
      `vocabulary mismatch: config.json says vocab_size ${vocab}, the graph's logits have ${info.vocabSize}`,
    )
  const shape = inputs.find((i) => i.name === 'past_key_values.0.key')?.shape ?? []
  const kvHeads =
    num('num_key_value_heads', 'n_head_kv', 'num_kv_heads') ?? num('num_attention_heads', 'n_head')
  if (typeof shape[1] === 'number' && shape[1] > 0 && kvHeads !== undefined && kvHeads !== shape[1])
    problems.push(`config.json says ${kvHeads} key/value heads, the graph's KV cache has ${shape[1]}`)
  return problems
}

/** The chat templates the worker may render (tokenizer_config.json's, named or not, and chat_template.jinja), each bounded. */
async function templateProblems(
  src: FolderSource,
  files: Set<string>,
  tokenizerConfig: Json | null,
): Promise<string[]> {
  const special: Record<string, string> = {}
  for (const [k, v] of Object.entries(tokenizerConfig ?? {}))
    if (k.endsWith('_token')) {
      const text = typeof v === 'string' ? v : v && typeof v === 'object' ? (v as Json).content : undefined
      if (typeof text === 'string') special[k] = text
    }
  const templates: Array<{ where: string; source: string }> = []
  const t = tokenizerConfig?.chat_template
  if (typeof t === 'string') templates.push({ where: `tokenizer_config.json chat_template`, source: t })
  else if (Array.isArray(t))
    t.forEach((x: { name?: unknown; template?: unknown }, i) => {
      if (typeof x?.template === 'string')
        templates.push({ where: `tokenizer_config.json chat_template[${i}] '${x.name}'`, source: x.template })
    })
  if (files.has('chat_template.jinja')) {
    const bytes = await src.read('chat_template.jinja')
    templates.push({
      where: 'chat_template.jinja',
      source: new TextDecoder().decode(bytes ?? new Uint8Array()),
    })
  }
  return templates.flatMap((x) => chatTemplateProblems(x.source, x.where, special))
}

/** Ids the tokenizer can produce: the largest id in its vocabulary or added tokens, plus one. */
export function tokenizerSize(tokenizerJson: Json): number {
  let max = -1
  const model = tokenizerJson.model as Json | undefined
  const vocab = model?.vocab
  if (Array.isArray(vocab))
    max = vocab.length - 1 // Unigram: [[piece, score], ...]
  else if (vocab && typeof vocab === 'object')
    for (const id of Object.values(vocab as Record<string, unknown>))
      if (typeof id === 'number' && id > max) max = id
  for (const t of (tokenizerJson.added_tokens as Array<{ id?: unknown }> | undefined) ?? [])
    if (typeof t.id === 'number' && t.id > max) max = t.id
  return max + 1
}
