/**
 * PrometheusGPT Mini model config: a Llama-style decoder (RMSNorm, RoPE,
 * SwiGLU MLP, grouped-query attention), stored as a Hugging Face `config.json`
 * with `model_type: "llama"` so transformers, transformers.js and Optimum read it.
 *
 * References: Hugging Face `LlamaConfig` (transformers/models/llama/configuration_llama.py),
 * nanoGPT `GPTConfig` for the shape of a small typed config.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { z } from 'zod'

/** Our in-memory config: camelCase, one field per hyper-parameter. */
export const LlamaConfigSchema = z
  .object({
    /** Number of token ids the embedding and the LM head cover. */
    vocabSize: z.number().int().positive(),
    /** Width of the residual stream (d_model). */
    hiddenSize: z.number().int().positive(),
    /** Number of decoder blocks. */
    numLayers: z.number().int().positive(),
    /** Query heads per layer. */
    numHeads: z.number().int().positive(),
    /** Key/value heads (grouped-query attention); numHeads must be a multiple of it. */
    numKvHeads: z.number().int().positive(),
    /** Hidden width of the SwiGLU MLP. */
    intermediateSize: z.number().int().positive(),
    /** RMSNorm epsilon, added to the mean square before the square root. */
    rmsNormEps: z.number().positive().default(1e-5),
    /** RoPE base: inv_freq[i] = theta^(-2i/headDim). */
    ropeTheta: z.number().positive().default(10000),
    /** Longest sequence (prompt + generation) the model is meant for. */
    maxPositions: z.number().int().positive().default(2048),
    /** LM head shares the token embedding matrix. */
    tieEmbeddings: z.boolean().default(true),
    /** Token ids of the special tokens written to config.json / generation_config.json. */
    bosTokenId: z.number().int().nonnegative().default(0),
    eosTokenId: z.number().int().nonnegative().default(0),
    padTokenId: z.number().int().nonnegative().default(0),
  })
  .refine((c) => c.hiddenSize % c.numHeads === 0, { message: 'hiddenSize must be a multiple of numHeads' })
  .refine((c) => c.numHeads % c.numKvHeads === 0, { message: 'numHeads must be a multiple of numKvHeads' })
  .refine((c) => (c.hiddenSize / c.numHeads) % 2 === 0, { message: 'head dim must be even (RoPE)' })

export type LlamaConfig = z.output<typeof LlamaConfigSchema>
export type LlamaConfigInput = z.input<typeof LlamaConfigSchema>

/** Validates and fills defaults. Throws a ZodError naming the bad field. */
export const parseConfig = (c: LlamaConfigInput): LlamaConfig => LlamaConfigSchema.parse(c)

export const headDim = (c: LlamaConfig): number => c.hiddenSize / c.numHeads

/** The subset of Hugging Face's LlamaConfig we read; unknown keys pass through untouched. */
const HfLlamaConfigSchema = z
  .object({
    model_type: z.literal('llama'),
    vocab_size: z.number().int(),
    hidden_size: z.number().int(),
    num_hidden_layers: z.number().int(),
    num_attention_heads: z.number().int(),
    num_key_value_heads: z.number().int().optional(),
    intermediate_size: z.number().int(),
    rms_norm_eps: z.number().optional(),
    rope_theta: z.number().optional(),
    max_position_embeddings: z.number().int().optional(),
    tie_word_embeddings: z.boolean().optional(),
    head_dim: z.number().int().optional(),
    hidden_act: z.string().optional(),
    rope_scaling: z.unknown().optional(),
    /** transformers v5 moves rope_theta here: { rope_type: 'default', rope_theta }. */
    rope_parameters: z
      .object({ rope_type: z.string().optional(), rope_theta: z.number().optional() })
      .loose()
      .nullish(),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    bos_token_id: z.number().int().nullable().optional(),
    eos_token_id: z
      .union([z.number().int(), z.array(z.number().int())])
      .nullable()
      .optional(),
    pad_token_id: z.number().int().nullable().optional(),
  })
  .loose()

export type HfLlamaConfig = z.infer<typeof HfLlamaConfigSchema>

/** Reads a Hugging Face `config.json` object; rejects Llama variants we cannot run. */
export function fromHfConfig(json: unknown): LlamaConfig {
  const hf = HfLlamaConfigSchema.parse(json)
  if (hf.hidden_act && hf.hidden_act !== 'silu')
    throw new Error(`config: hidden_act '${hf.hidden_act}' unsupported (silu only)`)
  if (hf.rope_scaling) throw new Error('config: rope_scaling is not supported')
  const ropeType = hf.rope_parameters?.rope_type ?? 'default'
  if (ropeType !== 'default') throw new Error(`config: rope_type '${ropeType}' is not supported`)
  if (hf.attention_bias || hf.mlp_bias) throw new Error('config: attention_bias/mlp_bias are not supported')
  if (hf.head_dim !== undefined && hf.head_dim * hf.num_attention_heads !== hf.hidden_size)
    throw new Error('config: head_dim must equal hidden_size / num_attention_heads')
  const eos = Array.isArray(hf.eos_token_id) ? hf.eos_token_id[0] : hf.eos_token_id
  return parseConfig({
    vocabSize: hf.vocab_size,
    hiddenSize: hf.hidden_size,
    numLayers: hf.num_hidden_layers,
    numHeads: hf.num_attention_heads,
    numKvHeads: hf.num_key_value_heads ?? hf.num_attention_heads,
    intermediateSize: hf.intermediate_size,
    rmsNormEps: hf.rms_norm_eps,
    ropeTheta: hf.rope_theta ?? hf.rope_parameters?.rope_theta,
    maxPositions: hf.max_position_embeddings,
    // transformers defaults tie_word_embeddings to true in PretrainedConfig, but LlamaConfig to false.
    tieEmbeddings: hf.tie_word_embeddings ?? false,
    bosTokenId: hf.bos_token_id ?? undefined,
    eosTokenId: eos ?? undefined,
    padTokenId: hf.pad_token_id ?? undefined,
  })
}

/** Writes our config as a Hugging Face `config.json` object. */
export function toHfConfig(c: LlamaConfig): HfLlamaConfig & Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: headDim(c),
    hidden_act: 'silu',
    max_position_embeddings: c.maxPositions,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    attention_bias: false,
    attention_dropout: 0,
    mlp_bias: false,
    tie_word_embeddings: c.tieEmbeddings,
    initializer_range: 0.02,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    pad_token_id: c.padTokenId,
    torch_dtype: 'float32',
    use_cache: true,
    transformers_version: '4.46.0',
  }
}

export async function loadConfig(path: string): Promise<LlamaConfig> {
  return fromHfConfig(JSON.parse(await readFile(path, 'utf8')))
}

export async function saveConfig(path: string, c: LlamaConfig): Promise<void> {
  await writeFile(path, `${JSON.stringify(toHfConfig(c), null, 2)}\n`)
}
