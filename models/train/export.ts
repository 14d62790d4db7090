/**
 * Writes a trained model as a complete Hugging Face model folder: config,
 * generation config, weights (safetensors), ONNX from the toolkit's exporter,
 * tokenizer files (when given) and a model card.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type LlamaConfig, saveConfig } from '../config.js'
import { defaultGenerationConfig, FILES } from '../folder.js'
import { exportOnnx } from '../llama/export.js'
import { checkWeights } from '../llama/weights.js'
import { readSafetensors, type SafeDType, type Weights, writeSafetensors } from '../safetensors.js'
import { saveTokenizer, type TokenizerFiles } from '../tokenizer/tokenizer.js'

export interface ExportFolderOptions {
  config: LlamaConfig
  weights: Weights
  /** Written as tokenizer.json / tokenizer_config.json when given. */
  tokenizer?: TokenizerFiles
  /** Used for generation_config.json's stop ids even when the files are not written. */
  tokenizerForIds?: TokenizerFiles
  /** README.md text. */
  card: string
  /** safetensors storage dtype; default F32 (F16 halves the size). */
  weightsDtype?: SafeDType
}

export async function writeTrainedModel(dir: string, o: ExportFolderOptions): Promise<void> {
  checkWeights(o.weights, o.config)
  await mkdir(join(dir, 'onnx'), { recursive: true })
  await saveConfig(join(dir, FILES.config), o.config)
  const gen = defaultGenerationConfig(o.config, o.tokenizer ?? o.tokenizerForIds)
  await writeFile(join(dir, FILES.generationConfig), `${JSON.stringify(gen, null, 2)}\n`)
  if (o.tokenizer) await saveTokenizer(dir, o.tokenizer)
  const dtype = o.weightsDtype ?? 'F32'
  const safetensors = writeSafetensors(o.weights, { dtype, metadata: { format: 'pt' } })
  await writeFile(join(dir, FILES.weights), safetensors)
  // The graph is exported from the weights as stored (narrowed to float16 when asked), so the
  // folder holds one model: the safetensors, its ONNX export and anything built from either agree.
  await writeFile(join(dir, FILES.onnx), exportOnnx(readSafetensors(safetensors).tensors, o.config))
  await writeFile(join(dir, FILES.card), o.card)
}
