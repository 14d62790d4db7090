/**
 * What the engine needs to know about a decoder-with-past model, read from
 * its `config.json` (the field names of Llama, Mistral, Qwen2, Phi, GPT-2,
 * GPT-NeoX, Falcon configs) and checked against the ONNX session's input and
 * output metadata. The engine depends on this I/O contract only:
 *
 *   input_ids [B,S] int64, attention_mask [B,P+S] int64, position_ids [B,S] int64 (optional),
 *   past_key_values.{i}.key|value [B,KV,P,D] → logits [B,S,V], present.{i}.key|value [B,KV,P+S,D]
 *
 * (Optimum's merged decoders add `use_cache_branch`; some exports add
 * `num_logits_to_keep`/`logits_to_keep`; both are fed when present.)
 */

export type KvDType = 'float32' | 'float16'

export interface ModelInfo {
  numLayers: number
  numKvHeads: number
  headDim: number
  vocabSize: number
  /** Longest sequence (prompt + completion), in tokens. */
  contextLength: number
  /** Element type of the KV cache (and of the logits, usually). */
  kvDType: KvDType
  logitsDType: KvDType
  hasPositionIds: boolean
  hasAttentionMask: boolean
  /** Optimum merged decoder switch, fed `past length > 0`. */
  useCacheBranch: boolean
  /** Name of a `num_logits_to_keep`-style input, fed 1, or null. */
  logitsToKeepInput: string | null
  pastKeyName: (layer: number) => string
  pastValueName: (layer: number) => string
  presentKeyName: (layer: number) => string
  presentValueName: (layer: number) => string
  /** Token ids that end a sequence. */
  eosTokenIds: number[]
  bosTokenId: number | null
}

/** The subset of onnxruntime's ValueMetadata we read. */
export interface IoMetadata {
  name: string
  isTensor: boolean
  type?: string
  shape?: ReadonlyArray<number | string>
}

type Json = Record<string, unknown>

const firstNumber = (c: Json, keys: string[]): number | undefined => {
  for (const k of keys) {
    const v = c[k]
    if (typeof v === 'number' && Number.isFinite(v)) return v
  }
  return undefined
}

const idList = (v: unknown): number[] =>
  typeof v === 'number' ? [v] : Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : []

/** Some configs (multimodal wrappers) nest the decoder's config under `text_config`. */
const textConfig = (c: Json): Json =>
  c.text_config && typeof c.text_config === 'object' ? { ...c, ...(c.text_config as Json) } : c

export class ModelInfoError extends Error {
  override readonly name = 'ModelInfoError'
}

/**
 * Combines config.json, generation_config.json and the graph's metadata.
 * The graph wins where it has fixed dimensions; config.json fills symbolic ones.
 */
export function readModelInfo(
  configJson: unknown,
  inputs: readonly IoMetadata[],
  outputs: readonly IoMetadata[],
  generationConfigJson: unknown = {},
): ModelInfo {
  const c = textConfig((configJson ?? {}) as Json)
  const gen = (generationConfigJson ?? {}) as Json
  const inputNames = new Set(inputs.map((i) => i.name))
  const outputNames = new Set(outputs.map((o) => o.name))

  for (const required of ['input_ids']) {
    if (!inputNames.has(required)) throw new ModelInfoError(`the graph has no '${required}' input`)
  }
  if (!outputNames.has('logits')) throw new ModelInfoError(`the graph has no 'logits' output`)

  // Past/present naming: Optimum's `past_key_values.{i}.key`, older `past_key_values.{i}.key` too;
  // present as `present.{i}.key` (Optimum) or `present_key_values.{i}.key`.
  const pastLayers = [...inputNames]
    .map((n) => /^past_key_values\.(\d+)\.key$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
  if (!pastLayers.length) throw new ModelInfoError(`the graph has no 'past_key_values.{i}.key' inputs`)
  const numLayers = Math.max(...pastLayers) + 1
  const presentPrefix = outputNames.has('present.0.key')
    ? 'present'
    : outputNames.has('present_key_values.0.key')
      ? 'present_key_values'
      : null
  if (!presentPrefix) throw new ModelInfoError(`the graph has no 'present.{i}.key' outputs`)
  for (let i = 0; i < numLayers; i++) {
    for (const n of [`past_key_values.${i}.key`, `past_key_values.${i}.value`]) {
      if (!inputNames.has(n)) throw new ModelInfoError(`the graph lacks input '${n}'`)
    }
    for (const n of [`${presentPrefix}.${i}.key`, `${presentPrefix}.${i}.value`]) {
      if (!outputNames.has(n)) throw new ModelInfoError(`the graph lacks output '${n}'`)
    }
  }
  const configLayers = firstNumber(c, ['num_hidden_layers', 'n_layer', 'num_layers', 'n_layers'])
  if (configLayers !== undefined && configLayers !== numLayers)
    throw new ModelInfoError(`config.json says ${configLayers} layers, the graph has ${numLayers}`)

  const pastKey = inputs.find((i) => i.name === 'past_key_values.0.key')!
  const shape = pastKey.shape ?? []
  const fixed = (d: number | string | undefined) => (typeof d === 'number' && d > 0 ? d : undefined)

  const heads = firstNumber(c, ['num_attention_heads', 'n_head', 'num_heads', 'n_heads'])
  const hidden = firstNumber(c, ['hidden_size', 'n_embd', 'd_model', 'dim'])
  const configKvHeads =
    firstNumber(c, ['num_key_value_heads', 'n_head_kv', 'num_kv_heads', 'multi_query_group_num']) ??
    (c.multi_query === true ? 1 : heads)
  const numKvHeads = fixed(shape[1]) ?? configKvHeads
  const headDim =
    fixed(shape[3]) ??
    firstNumber(c, ['head_dim', 'kv_channels']) ??
    (hidden !== undefined && heads ? hidden / heads : undefined)
  if (!numKvHeads) throw new ModelInfoError('cannot tell the number of key/value heads')
  if (!headDim || !Number.isInteger(headDim)) throw new ModelInfoError('cannot tell the attention head size')

  const logits = outputs.find((o) => o.name === 'logits')!
  const vocabSize = fixed(logits.shape?.[2]) ?? firstNumber(c, ['vocab_size', 'n_vocab', 'padded_vocab_size'])
  if (!vocabSize) throw new ModelInfoError('cannot tell the vocabulary size')

  const contextLength = firstNumber(c, [
    'max_position_embeddings',
    'n_positions',
    'n_ctx',
    'max_sequence_length',
    'seq_length',
    'max_seq_len',
  ])
  if (!contextLength) throw new ModelInfoError('config.json has no context length (max_position_embeddings)')

  const dtypeOf = (m: IoMetadata | undefined): KvDType => {
    if (m?.type === 'float16') return 'float16'
    if (m?.type === undefined || m.type === 'float32') return 'float32'
    throw new ModelInfoError(`unsupported element type '${m.type}' for '${m.name}'`)
  }

  const eos = [...new Set([...idList(gen.eos_token_id), ...idList(c.eos_token_id)])]
  const bos = firstNumber(gen, ['bos_token_id']) ?? firstNumber(c, ['bos_token_id']) ?? null
  const logitsToKeepInput = ['num_logits_to_keep', 'logits_to_keep'].find((n) => inputNames.has(n)) ?? null

  return {
    numLayers,
    numKvHeads,
    headDim,
    vocabSize,
    contextLength,
    kvDType: dtypeOf(pastKey),
    logitsDType: dtypeOf(logits),
    hasPositionIds: inputNames.has('position_ids'),
    hasAttentionMask: inputNames.has('attention_mask'),
    useCacheBranch: inputNames.has('use_cache_branch'),
    logitsToKeepInput,
    pastKeyName: (i) => `past_key_values.${i}.key`,
    pastValueName: (i) => `past_key_values.${i}.value`,
    presentKeyName: (i) => `${presentPrefix}.${i}.key`,
    presentValueName: (i) => `${presentPrefix}.${i}.value`,
    eosTokenIds: eos,
    bosTokenId: bos,
  }
}
