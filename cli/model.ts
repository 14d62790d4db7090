/**
 * `pgpt model`: create, export and inspect PrometheusGPT Mini model folders.
 *
 *   pgpt model init --out dir [--config config.json | --hidden-size 256 ...] [--tokenizer dir]
 *   pgpt model export dir [--dtype fp32|fp16]
 *   pgpt model inspect dir
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { defineCommand } from 'citty'
import {
  describeOnnx,
  exportModelFolder,
  FILES,
  fromHfConfig,
  type LlamaConfigInput,
  loadConfig,
  parameterCount,
  parseConfig,
  randomWeights,
  readTokenizerFiles,
  writeModelFolder,
} from '../models/index.js'

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n)) throw new Error(`--${flag}: '${v}' is not a number`)
  return n
}

const init = defineCommand({
  meta: { name: 'init', description: 'Create a model folder with random weights from a config' },
  args: {
    out: { type: 'string', required: true, description: 'Output folder' },
    config: { type: 'string', description: 'A Hugging Face config.json to start from (flags override it)' },
    tokenizer: {
      type: 'string',
      description: 'Folder with tokenizer.json + tokenizer_config.json to include',
    },
    'vocab-size': { type: 'string', description: 'Vocabulary size (default: the tokenizer size, else 4096)' },
    'hidden-size': { type: 'string', description: 'Residual width (default 256)' },
    layers: { type: 'string', description: 'Decoder blocks (default 4)' },
    heads: { type: 'string', description: 'Attention heads (default 8)' },
    'kv-heads': { type: 'string', description: 'Key/value heads for grouped-query attention (default 4)' },
    'intermediate-size': { type: 'string', description: 'SwiGLU hidden width (default 704)' },
    'rms-norm-eps': { type: 'string', description: 'RMSNorm epsilon (default 1e-5)' },
    'rope-theta': { type: 'string', description: 'RoPE base (default 10000)' },
    'max-positions': { type: 'string', description: 'Max sequence length (default 1024)' },
    'tie-embeddings': { type: 'boolean', description: 'Share the embedding with the LM head (default true)' },
    seed: { type: 'string', default: '0', description: 'Random seed' },
    std: { type: 'string', default: '0.02', description: 'Init standard deviation' },
    dtype: {
      type: 'string',
      default: 'fp32',
      description: 'ONNX variants to export: fp32, fp16 or fp32,fp16',
    },
  },
  async run({ args }) {
    const base: Partial<LlamaConfigInput> = args.config
      ? fromHfConfig(JSON.parse(await readFile(args.config, 'utf8')))
      : {}
    const tokenizer = args.tokenizer ? await readTokenizerFiles(args.tokenizer) : undefined
    const tokVocab = tokenizer
      ? Object.keys((tokenizer.tokenizer as { model: { vocab: object } }).model.vocab).length
      : undefined
    const config = parseConfig({
      vocabSize: num(args['vocab-size'], 'vocab-size') ?? base.vocabSize ?? tokVocab ?? 4096,
      hiddenSize: num(args['hidden-size'], 'hidden-size') ?? base.hiddenSize ?? 256,
      numLayers: num(args.layers, 'layers') ?? base.numLayers ?? 4,
      numHeads: num(args.heads, 'heads') ?? base.numHeads ?? 8,
      numKvHeads: num(args['kv-heads'], 'kv-heads') ?? base.numKvHeads ?? 4,
      intermediateSize: num(args['intermediate-size'], 'intermediate-size') ?? base.intermediateSize ?? 704,
      rmsNormEps: num(args['rms-norm-eps'], 'rms-norm-eps') ?? base.rmsNormEps,
      ropeTheta: num(args['rope-theta'], 'rope-theta') ?? base.ropeTheta,
      maxPositions: num(args['max-positions'], 'max-positions') ?? base.maxPositions ?? 1024,
      tieEmbeddings: args['tie-embeddings'] ?? base.tieEmbeddings ?? true,
      bosTokenId: base.bosTokenId,
      eosTokenId: base.eosTokenId,
      padTokenId: base.padTokenId,
    })
    if (tokVocab !== undefined && tokVocab > config.vocabSize)
      throw new Error(`--vocab-size ${config.vocabSize} is smaller than the tokenizer's ${tokVocab} tokens`)
    const variants = args.dtype.split(',').map((d) => d.trim())
    for (const v of variants)
      if (v !== 'fp32' && v !== 'fp16') throw new Error(`--dtype: '${v}' is not fp32 or fp16`)
    const weights = randomWeights(config, { seed: Number(args.seed), std: Number(args.std) })
    await writeModelFolder(
      args.out,
      { config, weights, tokenizer },
      { onnx: variants as ('fp32' | 'fp16')[] },
    )
    console.log(
      `wrote ${args.out}: ${parameterCount(config).toLocaleString('en-US')} parameters, onnx ${variants.join(', ')}`,
    )
  },
})

const exportCmd = defineCommand({
  meta: { name: 'export', description: 'Export model.safetensors to ONNX (decoder with past)' },
  args: {
    dir: { type: 'positional', required: true, description: 'Model folder' },
    dtype: { type: 'string', default: 'fp32', description: 'fp32 or fp16' },
  },
  async run({ args }) {
    if (args.dtype !== 'fp32' && args.dtype !== 'fp16')
      throw new Error(`--dtype: '${args.dtype}' is not fp32 or fp16`)
    const path = await exportModelFolder(args.dir, args.dtype)
    console.log(`wrote ${path}`)
  },
})

const inspect = defineCommand({
  meta: {
    name: 'inspect',
    description: 'Print a model folder: config, parameter count, ONNX inputs and outputs',
  },
  args: { dir: { type: 'positional', required: true, description: 'Model folder' } },
  async run({ args }) {
    const config = await loadConfig(join(args.dir, FILES.config))
    console.log('config:')
    for (const [k, v] of Object.entries(config)) console.log(`  ${k}: ${v}`)
    console.log(`parameters: ${parameterCount(config).toLocaleString('en-US')}`)
    for (const file of [FILES.onnx, FILES.onnxFp16]) {
      const path = join(args.dir, file)
      if (!existsSync(path)) continue
      const s = describeOnnx(await readFile(path))
      console.log(`${file}: opset ${s.opset}, ${s.nodes} nodes, ${s.initializers} initializers`)
      const row = (v: { name: string; dtype: string; shape: (string | number)[] }) =>
        `    ${v.name}: ${v.dtype} [${v.shape.join(', ')}]`
      console.log('  inputs:')
      for (const v of s.inputs) console.log(row(v))
      console.log('  outputs:')
      for (const v of s.outputs) console.log(row(v))
    }
  },
})

export default defineCommand({
  meta: { name: 'model', description: 'Create, export and inspect model folders' },
  subCommands: { init, export: exportCmd, inspect },
})
