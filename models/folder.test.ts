import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from '@huggingface/transformers'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from './config.js'
import { FILES, readModelFolder, writeModelFolder } from './folder.js'
import { randomWeights } from './llama/weights.js'
import { createSession, greedy } from './ort-decode.js'
import { createTokenizer, readTokenizerFiles, type TokenizerFiles } from './tokenizer/tokenizer.js'

const MINI = join(dirname(fileURLToPath(import.meta.url)), 'prometheus-mini')

const config = parseConfig({
  vocabSize: 4096,
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 128,
  maxPositions: 256,
})
// A larger init spread than training uses, so the greedy path is decided by clear margins.
const weights = randomWeights(config, { seed: 7, std: 0.2 })

let root: string
let tokenizerFiles: TokenizerFiles

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-folder-'))
  tokenizerFiles = await readTokenizerFiles(MINI)
  await writeModelFolder(
    join(root, 'tiny'),
    { config, weights, tokenizer: tokenizerFiles },
    { onnx: ['fp32', 'fp16'] },
  )
})

describe('model folder', () => {
  it('writes the Hugging Face layout and reads it back', async () => {
    const dir = join(root, 'tiny')
    const m = await readModelFolder(dir)
    expect(m.config).toEqual(config)
    expect([...m.weights.keys()].sort()).toEqual([...weights.keys()].sort())
    const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)
    for (const [name, t] of weights)
      expect(bytes(m.weights.get(name)!.data).equals(bytes(t.data)), name).toBe(true)
    expect(m.tokenizer!.tokenizer).toEqual(tokenizerFiles.tokenizer)
    expect(m.tokenizer!.config).toEqual({ ...tokenizerFiles.config, model_max_length: 256 })
    expect(m.generationConfig).toMatchObject({ eos_token_id: [0, 2], pad_token_id: 0, bos_token_id: 0 })
    const card = await readFile(join(dir, FILES.card), 'utf8')
    expect(card).toContain('| layers | 2 |')
    expect(card).toContain('model_fp16.onnx')
  })
})

describe('model folder checks', () => {
  it('refuses a tokenizer larger than the model vocabulary', async () => {
    const small = parseConfig({ ...config, vocabSize: 1000 })
    const dir = join(root, 'too-small')
    await expect(
      writeModelFolder(dir, { config: small, weights: randomWeights(small), tokenizer: tokenizerFiles }),
    ).rejects.toThrow(/4096 tokens/)
  })
})

describe('transformers.js loads our folder (local path, no hub)', () => {
  beforeAll(() => {
    env.allowRemoteModels = false
    env.allowLocalModels = true
    env.localModelPath = root
  })

  it('tokenizes like us', async () => {
    const theirs = await AutoTokenizer.from_pretrained('tiny')
    const ours = createTokenizer(tokenizerFiles)
    for (const text of ['The Congress of the United States', 'Привет 👋 <|im_start|>x<|im_end|>'])
      expect(Array.from(theirs.encode(text, { add_special_tokens: false }))).toEqual(ours.encode(text))
  })

  it.each([
    ['fp32', 'float32', FILES.onnx],
    ['fp16', 'float16', FILES.onnxFp16],
  ] as const)(
    '%s: greedy generation matches our KV-cache loop token for token',
    async (dtype, kvDtype, file) => {
      const tokenizer = await AutoTokenizer.from_pretrained('tiny')
      const model = await AutoModelForCausalLM.from_pretrained('tiny', { dtype })
      const prompt = 'The Congress of the United States'
      const inputs = tokenizer(prompt)
      const out = (await model.generate({ ...inputs, max_new_tokens: 24, do_sample: false })) as Tensor
      const promptIds = Array.from(inputs.input_ids.data as BigInt64Array, Number)
      const theirs = Array.from(out.data as BigInt64Array, Number).slice(promptIds.length)

      const session = await createSession(await readFile(join(root, 'tiny', file)))
      const ours = await greedy(session, config, createTokenizer(tokenizerFiles).encode(prompt), 24, {
        eos: [0, 2],
        dtype: kvDtype,
      })
      expect(theirs.length).toBeGreaterThan(3)
      expect(theirs).toEqual(ours)
      expect(new Set(ours).size).toBeGreaterThan(1) // not a degenerate single-token loop
      await model.dispose()
    },
  )

  it('a left-padded batch in transformers.js generates, per row, what our loop generates alone', async () => {
    const tokenizer = await AutoTokenizer.from_pretrained('tiny')
    tokenizer.padding_side = 'left'
    const model = await AutoModelForCausalLM.from_pretrained('tiny', { dtype: 'fp32' })
    const prompts = ['Hello there', 'The Congress of the United States is']
    const inputs = tokenizer(prompts, { padding: true })
    expect(Array.from(inputs.attention_mask.data as BigInt64Array, Number)).toContain(0) // really padded
    const out = (await model.generate({ ...inputs, max_new_tokens: 12, do_sample: false })) as Tensor
    const width = inputs.input_ids.dims[1]
    const rows = out.tolist() as bigint[][]
    const session = await createSession(await readFile(join(root, 'tiny', FILES.onnx)))
    const ours = createTokenizer(tokenizerFiles)
    for (const [i, prompt] of prompts.entries()) {
      const alone = await greedy(session, config, ours.encode(prompt), 12, { eos: [0, 2] })
      expect(rows[i].slice(width, width + alone.length).map(Number)).toEqual(alone)
    }
    await model.dispose()
  })
})
