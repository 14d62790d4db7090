import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCommand } from 'citty'
import { afterEach, describe, expect, it, vi } from 'vitest'
import modelCli from '../cli/model.js'
import tokenizerCli from '../cli/tokenizer.js'
import { readModelFolder } from './folder.js'
import { describeOnnx } from './graph/onnx.js'

const MINI = join(dirname(fileURLToPath(import.meta.url)), 'prometheus-mini')

/** Runs a citty command and returns what it printed. */
async function cli(cmd: Parameters<typeof runCommand>[0], rawArgs: string[]): Promise<string> {
  const lines: string[] = []
  const spy = vi.spyOn(console, 'log').mockImplementation((...xs) => void lines.push(xs.join(' ')))
  try {
    await runCommand(cmd, { rawArgs })
  } finally {
    spy.mockRestore()
  }
  return lines.join('\n')
}

afterEach(() => vi.restoreAllMocks())

describe('pgpt model / pgpt tokenizer', () => {
  it('init → export fp16 → inspect', async () => {
    const out = join(await mkdtemp(join(tmpdir(), 'pgpt-cli-')), 'm')
    const args = ['init', '--out', out, '--tokenizer', MINI, '--hidden-size', '32', '--layers', '1']
    await cli(modelCli, [
      ...args,
      '--heads',
      '4',
      '--kv-heads',
      '2',
      '--intermediate-size',
      '48',
      '--no-tie-embeddings',
    ])
    const m = await readModelFolder(out)
    expect(m.config).toMatchObject({
      vocabSize: 4096,
      hiddenSize: 32,
      numLayers: 1,
      numKvHeads: 2,
      tieEmbeddings: false,
    })
    expect(m.weights.has('lm_head.weight')).toBe(true)

    expect(await cli(modelCli, ['export', out, '--dtype', 'fp16'])).toContain('model_fp16.onnx')
    expect(describeOnnx(await readFile(join(out, 'onnx/model_fp16.onnx'))).inputs[3].dtype).toBe('float16')

    const printed = await cli(modelCli, ['inspect', out])
    expect(printed).toContain('numKvHeads: 2')
    expect(printed).toContain(
      `parameters: ${(4096 * 32 * 2 + 1 * (2 * 32 + 32 * 32 * 2 + 16 * 32 * 2 + 3 * 48 * 32) + 32).toLocaleString('en-US')}`,
    )
    expect(printed).toContain('past_key_values.0.key: float32 [batch_size, 2, past_sequence_length, 8]')
    expect(printed).toContain(
      'present.0.value: float16 [batch_size, 2, past_sequence_length + sequence_length, 8]',
    )
  })

  it('init reads --config (a Hugging Face config.json) and rejects a vocab smaller than the tokenizer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-cli-'))
    const configPath = join(dir, 'config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        model_type: 'llama',
        vocab_size: 300,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 8,
        tie_word_embeddings: true,
      }),
    )
    await cli(modelCli, ['init', '--out', join(dir, 'a'), '--config', configPath])
    expect((await readModelFolder(join(dir, 'a'))).config).toMatchObject({
      vocabSize: 300,
      numKvHeads: 2,
      hiddenSize: 16,
    })
    await expect(
      cli(modelCli, ['init', '--out', join(dir, 'b'), '--config', configPath, '--tokenizer', MINI]),
    ).rejects.toThrow(/smaller than the tokenizer/)
  })

  it('tokenizer train on files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-cli-'))
    const corpus = join(dir, 'corpus.txt')
    await writeFile(corpus, 'hello world, hello tokenizer; the world of tokens. '.repeat(50))
    const printed = await cli(tokenizerCli, [
      'train',
      '--files',
      corpus,
      '--vocab-size',
      '280',
      '--out',
      join(dir, 'tok'),
    ])
    expect(printed).toContain('280 tokens')
    const json = JSON.parse(await readFile(join(dir, 'tok', 'tokenizer.json'), 'utf8'))
    expect(json.model.type).toBe('BPE')
    expect(json.pre_tokenizer.type).toBe('ByteLevel')
  })
})
