import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { fromHfConfig, loadConfig, parseConfig, saveConfig, toHfConfig } from './config.js'

const mini = {
  vocabSize: 4096,
  hiddenSize: 256,
  numLayers: 4,
  numHeads: 8,
  numKvHeads: 4,
  intermediateSize: 704,
}

describe('config', () => {
  it('fills Llama defaults and round-trips through a Hugging Face config.json', async () => {
    const c = parseConfig(mini)
    expect(c).toMatchObject({ rmsNormEps: 1e-5, ropeTheta: 10000, tieEmbeddings: true })
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-config-'))
    await saveConfig(join(dir, 'config.json'), c)
    const json = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))
    expect(json).toMatchObject({
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      num_key_value_heads: 4,
      head_dim: 32,
      hidden_act: 'silu',
      tie_word_embeddings: true,
    })
    expect(await loadConfig(join(dir, 'config.json'))).toEqual(c)
  })

  it('reads a config written by transformers (TinyLlama-1.1B)', () => {
    const c = fromHfConfig({
      architectures: ['LlamaForCausalLM'],
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 2048,
      initializer_range: 0.02,
      intermediate_size: 5632,
      max_position_embeddings: 2048,
      model_type: 'llama',
      num_attention_heads: 32,
      num_hidden_layers: 22,
      num_key_value_heads: 4,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: null,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.35.0',
      use_cache: true,
      vocab_size: 32000,
    })
    expect(c).toMatchObject({
      numHeads: 32,
      numKvHeads: 4,
      tieEmbeddings: false,
      bosTokenId: 1,
      eosTokenId: 2,
    })
    expect(toHfConfig(c).num_key_value_heads).toBe(4)
  })

  it('defaults num_key_value_heads to the head count and takes the first eos id of a list', () => {
    const c = fromHfConfig({
      ...toHfConfig(parseConfig(mini)),
      num_key_value_heads: undefined,
      eos_token_id: [5, 7],
    })
    expect(c.numKvHeads).toBe(8)
    expect(c.eosTokenId).toBe(5)
  })

  it.each([
    [{ ...mini, numKvHeads: 3 }, /multiple of numKvHeads/],
    [{ ...mini, numHeads: 7 }, /multiple of numHeads/],
    [{ ...mini, hiddenSize: 24, numHeads: 8, numKvHeads: 8 }, /even/],
    [{ ...mini, vocabSize: 0 }, /vocabSize/],
  ])('rejects an invalid config (%#)', (bad, message) => {
    expect(() => parseConfig(bad)).toThrow(message)
  })

  it('reads rope_theta from transformers v5 rope_parameters', () => {
    const { rope_theta: _, ...hf } = toHfConfig(parseConfig(mini))
    const c = fromHfConfig({ ...hf, rope_parameters: { rope_type: 'default', rope_theta: 500000 } })
    expect(c.ropeTheta).toBe(500000)
    expect(() => fromHfConfig({ ...hf, rope_parameters: { rope_type: 'llama3', rope_theta: 5e5 } })).toThrow(
      /llama3/,
    )
  })

  it('rejects Llama variants the graph cannot run', () => {
    const hf = toHfConfig(parseConfig(mini))
    expect(() => fromHfConfig({ ...hf, rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling/)
    expect(() => fromHfConfig({ ...hf, hidden_act: 'gelu' })).toThrow(/gelu/)
    expect(() => fromHfConfig({ ...hf, model_type: 'gpt2' })).toThrow()
  })
})
