/**
 * A model folder in the Hugging Face layout, the one transformers.js loads
 * from a local path:
 *
 *   config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
 *   model.safetensors, onnx/model.onnx, onnx/model_fp16.onnx (optional), README.md
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type LlamaConfig, loadConfig, saveConfig } from './config.js'
import { exportOnnx } from './llama/export.js'
import { checkWeights, parameterCount } from './llama/weights.js'
import { readSafetensors, type Weights, writeSafetensors } from './safetensors.js'
import { readTokenizerFiles, saveTokenizer, type TokenizerFiles } from './tokenizer/tokenizer.js'

export const FILES = {
  config: 'config.json',
  generationConfig: 'generation_config.json',
  weights: 'model.safetensors',
  onnx: 'onnx/model.onnx',
  onnxFp16: 'onnx/model_fp16.onnx',
  card: 'README.md',
} as const

export interface GenerationConfig {
  bos_token_id: number
  /** All ids that end a generation (e.g. <|endoftext|> and <|im_end|>). */
  eos_token_id: number | number[]
  pad_token_id: number
  do_sample?: boolean
  max_new_tokens?: number
  temperature?: number
  top_p?: number
}

export interface ModelFolder {
  config: LlamaConfig
  weights: Weights
  tokenizer?: TokenizerFiles
  generationConfig?: GenerationConfig
  /** Model card title and text; a default card is written when absent. */
  card?: { name: string; description?: string }
}

export interface WriteModelFolderOptions {
  /** ONNX variants to export; default ['fp32']. */
  onnx?: ('fp32' | 'fp16')[]
}

export async function writeModelFolder(
  dir: string,
  m: ModelFolder,
  o: WriteModelFolderOptions = {},
): Promise<void> {
  checkWeights(m.weights, m.config)
  await mkdir(join(dir, 'onnx'), { recursive: true })
  await saveConfig(join(dir, FILES.config), m.config)
  const gen = m.generationConfig ?? defaultGenerationConfig(m.config, m.tokenizer)
  await writeFile(join(dir, FILES.generationConfig), `${JSON.stringify(gen, null, 2)}\n`)
  if (m.tokenizer) {
    const vocab = (m.tokenizer.tokenizer as { model?: { vocab?: object } }).model?.vocab ?? {}
    const size = Object.keys(vocab).length
    if (size > m.config.vocabSize)
      throw new Error(`model folder: tokenizer has ${size} tokens, config.vocabSize is ${m.config.vocabSize}`)
    const config = { ...m.tokenizer.config, model_max_length: m.config.maxPositions }
    await saveTokenizer(dir, { tokenizer: m.tokenizer.tokenizer, config })
  }
  await writeFile(join(dir, FILES.weights), writeSafetensors(m.weights, { metadata: { format: 'pt' } }))
  for (const dtype of o.onnx ?? ['fp32'])
    await writeFile(
      join(dir, dtype === 'fp16' ? FILES.onnxFp16 : FILES.onnx),
      exportOnnx(m.weights, m.config, { dtype }),
    )
  await writeFile(join(dir, FILES.card), modelCard(m, o.onnx ?? ['fp32']))
}

export async function readModelFolder(dir: string): Promise<ModelFolder> {
  const config = await loadConfig(join(dir, FILES.config))
  const { tensors: weights } = readSafetensors(await readFile(join(dir, FILES.weights)))
  checkWeights(weights, config)
  const tokenizer = (await exists(join(dir, 'tokenizer.json'))) ? await readTokenizerFiles(dir) : undefined
  const generationConfig = (await exists(join(dir, FILES.generationConfig)))
    ? (JSON.parse(await readFile(join(dir, FILES.generationConfig), 'utf8')) as GenerationConfig)
    : undefined
  return { config, weights, tokenizer, generationConfig }
}

/** Stops on <|endoftext|> and, when the tokenizer has it, <|im_end|> (end of a chat turn). */
export function defaultGenerationConfig(c: LlamaConfig, tokenizer?: TokenizerFiles): GenerationConfig {
  const vocab = (tokenizer?.tokenizer as { model?: { vocab?: Record<string, number> } } | undefined)?.model
    ?.vocab
  const imEnd = vocab?.['<|im_end|>']
  return {
    bos_token_id: c.bosTokenId,
    eos_token_id: imEnd !== undefined && imEnd !== c.eosTokenId ? [c.eosTokenId, imEnd] : c.eosTokenId,
    pad_token_id: c.padTokenId,
    do_sample: false,
    max_new_tokens: 256,
  }
}

function modelCard(m: ModelFolder, variants: string[]): string {
  const c = m.config
  const name = m.card?.name ?? 'PrometheusGPT Mini'
  return `---
library_name: transformers.js
pipeline_tag: text-generation
license: apache-2.0
tags: [llama, onnx, prometheus-gpt]
---

# ${name}

${m.card?.description ?? 'A small Llama-style decoder built with the PrometheusGPT toolkit.'}

| field | value |
|---|---|
| parameters | ${parameterCount(c).toLocaleString('en-US')} |
| vocab size | ${c.vocabSize} |
| hidden size | ${c.hiddenSize} |
| layers | ${c.numLayers} |
| attention heads (key/value) | ${c.numHeads} (${c.numKvHeads}) |
| MLP size (SwiGLU) | ${c.intermediateSize} |
| RMSNorm eps | ${c.rmsNormEps} |
| RoPE theta | ${c.ropeTheta} |
| max positions | ${c.maxPositions} |
| tied embeddings | ${c.tieEmbeddings} |

## Files

- \`config.json\`: Hugging Face \`LlamaConfig\` (model_type \`llama\`)
- \`model.safetensors\`: weights (float32)
- \`onnx/\`: ${variants.map((v) => (v === 'fp16' ? '`model_fp16.onnx`' : '`model.onnx`')).join(', ')} — decoder with past (Optimum layout: \`input_ids\`, \`attention_mask\`, \`position_ids\`, \`past_key_values.{i}.key|value\` → \`logits\`, \`present.{i}.key|value\`)
- \`tokenizer.json\`, \`tokenizer_config.json\`: byte-level BPE with a ChatML chat template

## Usage (transformers.js)

\`\`\`js
import { AutoModelForCausalLM, AutoTokenizer, env } from '@huggingface/transformers'
env.localModelPath = '/path/to/models'
const tokenizer = await AutoTokenizer.from_pretrained('this-model')
const model = await AutoModelForCausalLM.from_pretrained('this-model')
\`\`\`
`
}

/** Reads config.json + model.safetensors and (re)writes onnx/model.onnx or onnx/model_fp16.onnx; returns its path. */
export async function exportModelFolder(dir: string, dtype: 'fp32' | 'fp16' = 'fp32'): Promise<string> {
  const config = await loadConfig(join(dir, FILES.config))
  const { tensors } = readSafetensors(await readFile(join(dir, FILES.weights)))
  const path = join(dir, dtype === 'fp16' ? FILES.onnxFp16 : FILES.onnx)
  await mkdir(join(dir, 'onnx'), { recursive: true })
  await writeFile(path, exportOnnx(tensors, config, { dtype }))
  return path
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  )
}
