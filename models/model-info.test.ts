import { describe, expect, it } from 'vitest'
import { type IoMetadata, readModelInfo } from './model-info.js'

/** Graph metadata of a decoder-with-past export with symbolic or fixed dims. */
function io(
  layers: number,
  o: {
    kvHeads?: number | string
    headDim?: number | string
    vocab?: number | string
    type?: string
    positionIds?: boolean
    merged?: boolean
  } = {},
) {
  const kv = (name: string): IoMetadata => ({
    name,
    isTensor: true,
    type: o.type ?? 'float32',
    shape: ['batch_size', o.kvHeads ?? 'kv', 'past_sequence_length', o.headDim ?? 'd'],
  })
  const inputs: IoMetadata[] = [
    { name: 'input_ids', isTensor: true, type: 'int64', shape: ['batch_size', 'sequence_length'] },
    { name: 'attention_mask', isTensor: true, type: 'int64', shape: ['batch_size', 'total'] },
  ]
  if (o.positionIds !== false)
    inputs.push({ name: 'position_ids', isTensor: true, type: 'int64', shape: ['b', 's'] })
  if (o.merged) inputs.push({ name: 'use_cache_branch', isTensor: true, type: 'bool', shape: [1] })
  const outputs: IoMetadata[] = [
    { name: 'logits', isTensor: true, type: o.type ?? 'float32', shape: ['b', 's', o.vocab ?? 'vocab'] },
  ]
  for (let i = 0; i < layers; i++) {
    inputs.push(kv(`past_key_values.${i}.key`), kv(`past_key_values.${i}.value`))
    outputs.push(kv(`present.${i}.key`), kv(`present.${i}.value`))
  }
  return { inputs, outputs }
}

describe('readModelInfo', () => {
  it.each([
    {
      family: 'llama',
      config: {
        num_hidden_layers: 2,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        hidden_size: 256,
        vocab_size: 1000,
        max_position_embeddings: 512,
        eos_token_id: 2,
      },
      want: {
        numLayers: 2,
        numKvHeads: 2,
        headDim: 32,
        vocabSize: 1000,
        contextLength: 512,
        eosTokenIds: [2],
      },
    },
    {
      family: 'mistral (explicit head_dim)',
      config: {
        num_hidden_layers: 2,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        hidden_size: 256,
        head_dim: 64,
        vocab_size: 50,
        max_position_embeddings: 4096,
      },
      want: { numKvHeads: 4, headDim: 64, contextLength: 4096 },
    },
    {
      family: 'gpt2',
      config: {
        n_layer: 2,
        n_head: 12,
        n_embd: 768,
        vocab_size: 50257,
        n_positions: 1024,
        eos_token_id: 50256,
      },
      want: { numKvHeads: 12, headDim: 64, contextLength: 1024, eosTokenIds: [50256] },
    },
    {
      family: 'qwen2 (eos list, generation_config)',
      config: {
        num_hidden_layers: 2,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        hidden_size: 896,
        vocab_size: 151936,
        max_position_embeddings: 32768,
        eos_token_id: 151643,
      },
      generation: { eos_token_id: [151645, 151643] },
      want: { headDim: 64, eosTokenIds: [151645, 151643] },
    },
    {
      family: 'falcon (multi_query)',
      config: {
        num_hidden_layers: 2,
        num_attention_heads: 8,
        hidden_size: 512,
        multi_query: true,
        vocab_size: 10,
        max_position_embeddings: 2048,
      },
      want: { numKvHeads: 1, headDim: 64 },
    },
  ])('reads $family configs', ({ config, generation, want }) => {
    const { inputs, outputs } = io(2)
    expect(readModelInfo(config, inputs, outputs, generation)).toMatchObject(want)
  })

  it('prefers fixed graph dims and reads element type and optional inputs from the graph', () => {
    const { inputs, outputs } = io(3, {
      kvHeads: 4,
      headDim: 16,
      vocab: 77,
      type: 'float16',
      positionIds: false,
      merged: true,
    })
    const info = readModelInfo(
      { num_hidden_layers: 3, num_attention_heads: 8, hidden_size: 64, vocab_size: 80, n_ctx: 128 },
      inputs,
      outputs,
    )
    expect(info).toMatchObject({
      numLayers: 3,
      numKvHeads: 4,
      headDim: 16,
      vocabSize: 77,
      contextLength: 128,
      kvDType: 'float16',
      hasPositionIds: false,
      useCacheBranch: true,
    })
    expect(info.presentKeyName(2)).toBe('present.2.key')
  })

  it('rejects graphs without the decoder-with-past contract and inconsistent configs', () => {
    const { inputs, outputs } = io(2)
    const cfg = {
      num_hidden_layers: 2,
      num_attention_heads: 2,
      hidden_size: 8,
      vocab_size: 5,
      max_position_embeddings: 8,
    }
    expect(() =>
      readModelInfo(
        cfg,
        inputs.filter((i) => !i.name.startsWith('past')),
        outputs,
      ),
    ).toThrow(/past_key_values/)
    expect(() =>
      readModelInfo(
        cfg,
        inputs,
        outputs.filter((o) => o.name !== 'present.1.value'),
      ),
    ).toThrow(/present.1.value/)
    expect(() => readModelInfo({ ...cfg, num_hidden_layers: 3 }, inputs, outputs)).toThrow(/3 layers/)
    expect(() => readModelInfo({ ...cfg, max_position_embeddings: undefined }, inputs, outputs)).toThrow(
      /context length/,
    )
    const { inputs: i8, outputs: o8 } = io(2, { type: 'int8' })
    expect(() => readModelInfo(cfg, i8, o8)).toThrow(/unsupported element type/)
  })
})
