/**
 * Test support: model folders of different shapes in the Optimum layout, as
 * teams bring them, built from random weights with the toolkit's graph pieces
 * (models/llama/graph.ts) so nothing comes from a hub:
 *
 * - grouped-query or multi-head attention, tied or untied embeddings;
 * - with a `position_ids` input, or without one (positions computed in the
 *   graph from the attention mask: cumsum(mask) - 1, as GPT-2 exports do);
 * - fp32 or fp16; weights inside the graph or in an external data file;
 * - a Llama-style or a GPT-2-style config.json (n_layer, n_head, n_embd, n_positions).
 *
 * The tokenizer is prometheus-mini's (4096 tokens, ChatML template).
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import onnxProto from 'onnx-proto'
import { type LlamaConfig, parseConfig, toHfConfig } from '../../models/config.js'
import { fuseSiblingMatMuls } from '../../models/graph/fuse.js'
import { Graph, type Value } from '../../models/graph/ir.js'
import { toOnnxModel } from '../../models/graph/onnx.js'
import {
  attention,
  attentionAllowed,
  DIMS,
  type FloatDType,
  type LlamaParams,
  mlp,
  rmsNorm,
  ropeTables,
  weightParams,
} from '../../models/llama/graph.js'
import { randomWeights } from '../../models/llama/weights.js'

const { onnx } = onnxProto

export const MINI_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'prometheus-mini')

export interface ByoShape {
  heads: number
  kvHeads: number
  tied: boolean
  positionIds: boolean
  dtype: 'fp32' | 'fp16'
  externalData: boolean
  configStyle: 'llama' | 'gpt2'
  /** Where the graph goes; default onnx/model.onnx (onnx/model_fp16.onnx for fp16). */
  graphPath?: string
  seed?: number
  vocabSize?: number
  layers?: number
}

export interface ByoFolder {
  dir: string
  config: LlamaConfig
  graphPath: string
}

export function shapeConfig(s: ByoShape): LlamaConfig {
  return parseConfig({
    vocabSize: s.vocabSize ?? 4096,
    hiddenSize: 64,
    numLayers: s.layers ?? 2,
    numHeads: s.heads,
    numKvHeads: s.kvHeads,
    intermediateSize: 128,
    maxPositions: 256,
    tieEmbeddings: s.tied,
    eosTokenId: 0,
  })
}

/** The decoder-with-past graph, optionally without a position_ids input. */
export function buildByoGraph(c: LlamaConfig, s: Pick<ByoShape, 'positionIds' | 'dtype' | 'seed'>): Graph {
  const dtype: FloatDType = s.dtype === 'fp16' ? 'float16' : 'float32'
  // A wide init spread, so greedy paths are decided by clear margins (fp16 included).
  const weights = randomWeights(c, { seed: s.seed ?? 7, std: 0.2 })
  const g = new Graph('byo_decoder')
  const p = weightParams(g, weights, c, dtype)
  const D = c.hiddenSize / c.numHeads
  const { batch: B, seq: S, past: P, total: T } = DIMS
  const inputIds = g.input('input_ids', 'int64', [B, S])
  const mask = g.input('attention_mask', 'int64', [B, T])
  const positionIds = s.positionIds
    ? g.input('position_ids', 'int64', [B, S])
    : positionsFromMask(g, inputIds, mask)
  const past = Array.from({ length: c.numLayers }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, dtype, [B, c.numKvHeads, P, D]),
    value: g.input(`past_key_values.${i}.value`, dtype, [B, c.numKvHeads, P, D]),
  }))
  const rope = ropeTables(g, positionIds, c, dtype)
  const allowed = attentionAllowed(g, inputIds, mask)
  let x = g.gather(p.embed, inputIds)
  const present = []
  for (let i = 0; i < c.numLayers; i++) {
    const w = p.layers[i]
    const a = attention(g, rmsNorm(g, x, w.attnNorm, c.rmsNormEps), w, c, rope, allowed, past[i])
    present.push(a.present)
    x = g.add(x, a.out)
    x = g.add(x, mlp(g, rmsNorm(g, x, w.mlpNorm, c.rmsNormEps), w))
  }
  x = rmsNorm(g, x, p.norm, c.rmsNormEps)
  g.output(logits(g, x, p, c, inputIds), 'logits', [B, S, c.vocabSize])
  present.forEach((kv, i) => {
    g.output(kv.key, `present.${i}.key`, [B, c.numKvHeads, T, D])
    g.output(kv.value, `present.${i}.value`, [B, c.numKvHeads, T, D])
  })
  fuseSiblingMatMuls(g)
  return g
}

/** position_ids [B,S] = (cumsum(attention_mask, 1) - 1)[:, P:]: real tokens counted, padding ignored. */
function positionsFromMask(g: Graph, inputIds: Value, mask: Value): Value {
  const one = g.scalar(1, 'int64')
  const positions = g.sub(g.op('CumSum', [mask, one])[0], one)
  const seqLen = g.gather(g.shape(inputIds), g.ints([1]))
  const total = g.gather(g.shape(mask), g.ints([1]))
  return g.op('Slice', [positions, g.sub(total, seqLen), total, g.ints([1])])[0]
}

/** Tied: Gemm(transB) on the embedding; untied: MatMul with lm_head [C,V] (as models/llama/graph.ts). */
function logits(g: Graph, x: Value, p: LlamaParams, c: LlamaConfig, inputIds: Value): Value {
  if (p.lmHead) return g.matmul(x, p.lmHead)
  const flat = g.reshape(x, [-1, c.hiddenSize])
  const out = g.gemm(flat, p.embed, null, { transB: true })
  return g.reshape(out, g.concat([g.shape(inputIds), g.ints([c.vocabSize])], 0))
}

/**
 * ONNX bytes of `g`; with `externalData`, every initializer of 1 KiB or more
 * goes to `dataFile` (offsets 4 KiB-aligned) and the graph only points to it.
 */
export function serializeByo(
  g: Graph,
  externalData: string | null,
): { graph: Uint8Array; data?: Uint8Array } {
  const model = toOnnxModel(g, { metadata: { producer: 'byo-fixture' } })
  if (!externalData) return { graph: onnx.ModelProto.encode(model).finish() }
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const t of model.graph?.initializer ?? []) {
    const raw = t.rawData as Uint8Array | undefined
    if (!raw || raw.byteLength < 1024) continue
    const pad = (4096 - (offset % 4096)) % 4096
    if (pad) chunks.push(new Uint8Array(pad))
    offset += pad
    chunks.push(raw)
    t.externalData = [
      { key: 'location', value: externalData },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(raw.byteLength) },
    ]
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL
    delete (t as { rawData?: Uint8Array }).rawData
    offset += raw.byteLength
  }
  const data = new Uint8Array(offset)
  let at = 0
  for (const c of chunks) {
    data.set(c, at)
    at += c.byteLength
  }
  return { graph: onnx.ModelProto.encode(model).finish(), data }
}

export function configJson(c: LlamaConfig, style: ByoShape['configStyle']): Record<string, unknown> {
  if (style === 'llama') return toHfConfig(c)
  if (c.numKvHeads !== c.numHeads) throw new Error('a GPT-2-style config has no grouped-query attention')
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: c.vocabSize,
    n_embd: c.hiddenSize,
    n_layer: c.numLayers,
    n_head: c.numHeads,
    n_positions: c.maxPositions,
    n_ctx: c.maxPositions,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    tie_word_embeddings: c.tieEmbeddings,
    use_cache: true,
  }
}

/** Writes a servable folder of shape `s` under `dir`. */
export async function writeByoFolder(dir: string, s: ByoShape): Promise<ByoFolder> {
  const config = shapeConfig(s)
  const graphPath = s.graphPath ?? (s.dtype === 'fp16' ? 'onnx/model_fp16.onnx' : 'onnx/model.onnx')
  const dataName = `${graphPath.split('/').pop()}_data`
  const { graph, data } = serializeByo(buildByoGraph(config, s), s.externalData ? dataName : null)
  await mkdir(dirname(join(dir, graphPath)), { recursive: true })
  await writeFile(join(dir, graphPath), graph)
  if (data) await writeFile(join(dirname(join(dir, graphPath)), dataName), data)
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(configJson(config, s.configStyle), null, 2)}\n`)
  await writeFile(
    join(dir, 'generation_config.json'),
    `${JSON.stringify({ bos_token_id: 0, eos_token_id: [0, 2], pad_token_id: 0, do_sample: false }, null, 2)}\n`,
  )
  await copyFile(join(MINI_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'))
  await copyFile(join(MINI_DIR, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'))
  return { dir, config, graphPath }
}
