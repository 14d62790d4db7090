/**
 * `pgpt model`: create, export and inspect PrometheusGPT Mini model folders,
 * and publish any decoder-with-past ONNX folder (Optimum layout) for serving.
 *
 *   pgpt model init --out dir [--config config.json | --hidden-size 256 ...] [--tokenizer dir]
 *   pgpt model export dir [--dtype fp32|fp16]
 *   pgpt model inspect dir
 *   pgpt model validate dir [--onnx onnx/model.onnx]
 *   pgpt model publish dir [--name id] [--tenant t | --public] [--onnx path] [--replace]
 *   pgpt model list [--tenant t] [--json]
 *
 * publish and list use the configured ObjectStore (PGPT_STORE; the local
 * profile's is `<PGPT_DATA_DIR>/store`, the one `npm start` serves from).
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { defineCommand } from 'citty'
import { loadConfig as loadEnvConfig } from '../core/config-node.js'
import { listManifests, type ModelManifest } from '../core/model-manifest.js'
import type { ObjectStore } from '../core/ports/object-store.js'
import { openStore } from '../core/wiring.js'
import { nodeBackends } from '../core/wiring-node.js'
import { dirSource } from '../models/byo/fs-source.js'
import { InvalidModelIdError, PublishConflictError, publishByoModel } from '../models/byo/publish.js'
import { type ModelSummary, ModelValidationError, validateModelFolder } from '../models/byo/validate.js'
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

/** Errors about the user's folder or name print as their message alone, without a stack. */
async function userErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (
      err instanceof ModelValidationError ||
      err instanceof PublishConflictError ||
      err instanceof InvalidModelIdError
    ) {
      const plain = new Error(err.message)
      plain.stack = `Error: ${err.message}`
      throw plain
    }
    throw err
  }
}

/** The configured ObjectStore, closed after `fn`. */
async function withStore<T>(fn: (store: ObjectStore) => Promise<T>): Promise<T> {
  const config = loadEnvConfig()
  const store = openStore(config, nodeBackends(config))
  try {
    return await fn(store)
  } finally {
    await store.close?.()
  }
}

const summary = (s: ModelSummary) =>
  [
    `  layers ${s.layers}, key/value heads ${s.kvHeads}, head size ${s.headDim}, vocabulary ${s.vocabSize} (tokenizer ${s.tokenizerVocabSize})`,
    `  context ${s.contextLength}, ${s.dtype}, position_ids ${s.positionIds ? 'yes' : 'no (computed in the graph)'}, chat template ${s.chatTemplate ? 'yes' : 'no'}`,
    `  eos ids ${s.eosTokenIds.join(', ') || '(none)'}${s.externalData.length ? `, external data ${s.externalData.join(', ')}` : ''}`,
  ].join('\n')

const validate = defineCommand({
  meta: { name: 'validate', description: 'Check that a decoder-with-past ONNX folder can be served' },
  args: {
    dir: {
      type: 'positional',
      required: true,
      description: 'Model folder (Optimum / transformers.js layout)',
    },
    onnx: {
      type: 'string',
      description: 'The graph to serve, relative to the folder (default: onnx/model.onnx, model.onnx, ...)',
    },
  },
  async run({ args }) {
    const v = await userErrors(() => validateModelFolder(dirSource(args.dir), { onnx: args.onnx }))
    console.log(`${args.dir}: servable (${v.graph})`)
    console.log(summary(v.info))
    if (v.skipped.length) console.log(`  not uploaded: ${v.skipped.join(', ')}`)
  },
})

const publish = defineCommand({
  meta: {
    name: 'publish',
    description: 'Validate a model folder and publish it into the ObjectStore for serving',
  },
  args: {
    dir: {
      type: 'positional',
      required: true,
      description: 'Model folder (Optimum / transformers.js layout)',
    },
    name: { type: 'string', description: 'Model id (default: the folder name)' },
    tenant: { type: 'string', description: 'Only this tenant may use the model' },
    public: { type: 'boolean', description: 'Every tenant may use the model' },
    onnx: {
      type: 'string',
      description: 'The graph to serve, relative to the folder (default: onnx/model.onnx, model.onnx, ...)',
    },
    replace: { type: 'boolean', description: 'Replace a model of the same id and owner' },
  },
  async run({ args }) {
    if (!args.tenant === !args.public) throw new Error('pass exactly one of --tenant <t> or --public')
    const id = args.name ?? basename(resolve(args.dir))
    const { manifest, validated } = await userErrors(() =>
      withStore((store) =>
        publishByoModel(store, dirSource(args.dir), {
          id,
          owner: args.public ? null : args.tenant!,
          onnx: args.onnx,
          replace: args.replace ?? false,
        }),
      ),
    )
    const bytes = manifest.files.reduce((a, f) => a + f.size, 0)
    console.log(
      `published ${manifest.id} for ${manifest.owner === null ? 'every tenant' : `tenant ${manifest.owner}`}: ${manifest.files.length} files, ${(bytes / 1e6).toFixed(1)} MB`,
    )
    console.log(summary(validated.info))
    if (validated.skipped.length) console.log(`  not uploaded: ${validated.skipped.join(', ')}`)
  },
})

const row = (m: ModelManifest) =>
  [
    m.id,
    m.owner ?? '(public)',
    m.source,
    m.context_length,
    new Date(m.created * 1000).toISOString(),
    `${(m.files.reduce((a, f) => a + f.size, 0) / 1e6).toFixed(1)} MB`,
  ].join('\t')

const list = defineCommand({
  meta: { name: 'list', description: 'List the models in the ObjectStore' },
  args: {
    tenant: {
      type: 'string',
      description: 'Only the models this tenant may use (its own and the public ones)',
    },
    json: { type: 'boolean', description: 'Print the manifests as JSON' },
  },
  async run({ args }) {
    const all = await withStore((store) => listManifests(store))
    const models = all
      .filter((m) => !args.tenant || m.owner === null || m.owner === args.tenant)
      .sort((a, b) => a.id.localeCompare(b.id))
    if (args.json) return console.log(JSON.stringify(models, null, 2))
    console.log(['id', 'owner', 'source', 'context', 'created', 'size'].join('\t'))
    for (const m of models) console.log(row(m))
  },
})

export default defineCommand({
  meta: { name: 'model', description: 'Create, export, inspect, validate, publish and list models' },
  subCommands: { init, export: exportCmd, inspect, validate, publish, list },
})
