import { cp, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import onnxProto, { type onnx as OnnxTypes } from 'onnx-proto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ByoShape, buildByoGraph, shapeConfig, writeByoFolder } from '../../test/helpers/byo-fixtures.js'
import { toOnnxModel } from '../graph/onnx.js'
import { dirSource } from './fs-source.js'
import { ModelValidationError, validateModelFolder } from './validate.js'

const { onnx } = onnxProto

const base: ByoShape = {
  heads: 4,
  kvHeads: 2,
  tied: true,
  positionIds: true,
  dtype: 'fp32',
  externalData: false,
  configStyle: 'llama',
}

let root: string
let good: string
let n = 0

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-byo-validate-'))
  good = (await writeByoFolder(join(root, 'good'), base)).dir
})
afterAll(() => rm(root, { recursive: true, force: true }))

/** A copy of the good folder, changed by `edit`. */
async function variant(edit: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(root, `v${n++}`)
  await cp(good, dir, { recursive: true })
  await edit(dir)
  return dir
}

/** The good graph with its ModelProto changed by `edit`, written as onnx/model.onnx. */
type Io = { input: OnnxTypes.IValueInfoProto[]; output: OnnxTypes.IValueInfoProto[] }
const withGraph = (edit: (m: { graph: Io }) => void) => async (dir: string) => {
  const m = toOnnxModel(buildByoGraph(shapeConfig(base), base))
  edit(m as unknown as { graph: Io })
  await writeFile(join(dir, 'onnx/model.onnx'), onnx.ModelProto.encode(m).finish())
}

const rename = (list: OnnxTypes.IValueInfoProto[], from: string, to: string) => {
  const v = list.find((x) => x.name === from)
  if (!v) throw new Error(`no ${from}`)
  v.name = to
}

async function problemsOf(dir: string, onnxPath?: string): Promise<string[]> {
  try {
    await validateModelFolder(dirSource(dir), onnxPath ? { onnx: onnxPath } : {})
  } catch (err) {
    expect(err).toBeInstanceOf(ModelValidationError)
    return (err as ModelValidationError).problems
  }
  throw new Error('the folder validated')
}

describe('validateModelFolder: a good folder', () => {
  it('reads the shape and lists what to upload', async () => {
    const v = await validateModelFolder(dirSource(good))
    expect(v.graph).toBe('onnx/model.onnx')
    expect(v.info).toMatchObject({
      layers: 2,
      kvHeads: 2,
      headDim: 16,
      vocabSize: 4096,
      contextLength: 256,
      dtype: 'float32',
      positionIds: true,
      chatTemplate: true,
      eosTokenIds: [0, 2],
      tokenizerVocabSize: 4096,
    })
    expect(v.files.map((f) => f.to).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'onnx/model.onnx',
      'tokenizer.json',
      'tokenizer_config.json',
    ])
  })

  it('stores a graph with another name as onnx/model.onnx and leaves other graphs and weights behind', async () => {
    const dir = await variant(async (d) => {
      await cp(join(d, 'onnx/model.onnx'), join(d, 'onnx/decoder_custom.onnx'))
      await writeFile(join(d, 'onnx/model.onnx'), 'not used')
      await writeFile(join(d, 'model.safetensors'), 'weights')
    })
    const v = await validateModelFolder(dirSource(dir), { onnx: 'onnx/decoder_custom.onnx' })
    expect(v.files).toContainEqual({ from: 'onnx/decoder_custom.onnx', to: 'onnx/model.onnx' })
    expect(v.files.map((f) => f.from)).not.toContain('onnx/model.onnx')
    expect(v.skipped).toEqual(['model.safetensors', 'onnx/model.onnx'])
  })

  it('finds a graph at the folder root (model.onnx)', async () => {
    const dir = await variant(async (d) => {
      await cp(join(d, 'onnx/model.onnx'), join(d, 'model.onnx'))
      await rm(join(d, 'onnx'), { recursive: true })
    })
    expect((await validateModelFolder(dirSource(dir))).files[0]).toEqual({
      from: 'model.onnx',
      to: 'model.onnx',
    })
  })
})

describe('validateModelFolder: each problem is named', () => {
  it.each([
    ['config.json', /missing file 'config\.json'/],
    ['tokenizer.json', /missing file 'tokenizer\.json'/],
    ['onnx/model.onnx', /missing file 'onnx\/model\.onnx' \(no ONNX graph/],
  ])('missing %s', async (file, message) => {
    const dir = await variant((d) => unlink(join(d, file)))
    expect((await problemsOf(dir)).join('\n')).toMatch(message)
  })

  it('a named graph that is not there', async () => {
    expect(await problemsOf(good, 'onnx/model_q4.onnx')).toEqual([
      "missing file 'onnx/model_q4.onnx' (the ONNX graph asked for)",
    ])
  })

  it('an unreadable ONNX file', async () => {
    const dir = await variant((d) =>
      writeFile(join(d, 'onnx/model.onnx'), '\x08\x07garbage that is not protobuf'),
    )
    const problems = await problemsOf(dir)
    expect(problems).toHaveLength(1)
    expect(problems[0]).toMatch(/^'onnx\/model\.onnx' is not a readable ONNX model: /)
  })

  it('renamed inputs and outputs are named in the error', async () => {
    const dir = await variant(
      withGraph((m) => {
        rename(m.graph.input, 'input_ids', 'tokens')
        rename(m.graph.output, 'logits', 'lm_logits')
      }),
    )
    const problems = await problemsOf(dir)
    expect(problems).toContain(
      "the graph has no 'input_ids' input (inputs: tokens, attention_mask, position_ids, past_key_values.0.key, past_key_values.0.value, past_key_values.1.key, past_key_values.1.value)",
    )
    expect(problems.join('\n')).toMatch(
      /the graph has no 'logits' output \(outputs: lm_logits, present\.0\.key/,
    )
    expect(problems).toContain('the graph has inputs outside the contract: tokens')
  })

  it('a missing present output and a graph exported without past', async () => {
    const noPresent = await variant(
      withGraph((m) => {
        m.graph.output = m.graph.output.filter((o) => o.name !== 'present.1.value')
      }),
    )
    expect(await problemsOf(noPresent)).toEqual(['the graph lacks outputs present.1.value'])
    const noPast = await variant(
      withGraph((m) => {
        m.graph.input = m.graph.input.filter((i) => !i.name?.startsWith('past_key_values'))
      }),
    )
    expect((await problemsOf(noPast)).join('\n')).toMatch(
      /the graph has no 'past_key_values\.\{i\}\.key\|value' inputs \(it must be exported with past/,
    )
  })

  it.each([
    ['past_key_values.0.key', 16, "unsupported element type 'bfloat16' for 'past_key_values.0.key'"],
    ['logits', 11, "unsupported element type 'float64' for 'logits'"],
    ['input_ids', 6, "unsupported element type 'int32' for input 'input_ids' (int64 expected)"],
  ])('an unsupported element type on %s', async (name, elemType, message) => {
    const dir = await variant(
      withGraph((m) => {
        const v = [...m.graph.input, ...m.graph.output].find((x) => x.name === name)!
        v.type!.tensorType!.elemType = elemType
      }),
    )
    expect((await problemsOf(dir)).join('\n')).toContain(message)
  })

  it('a vocabulary that does not match the tokenizer', async () => {
    const dir = join(root, 'small-vocab')
    await writeByoFolder(dir, { ...base, vocabSize: 1000 })
    expect(await problemsOf(dir)).toEqual([
      "vocabulary mismatch: the tokenizer has 4096 tokens (ids 0..4095), the model's logits have 1000",
    ])
  })

  it("config.json's vocab_size or layer count against the graph", async () => {
    const dir = await variant(async (d) => {
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'))
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, vocab_size: 5000 }))
    })
    expect(await problemsOf(dir)).toEqual([
      "vocabulary mismatch: config.json says vocab_size 5000, the graph's logits have 4096",
    ])
    const layers = await variant(async (d) => {
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'))
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, num_hidden_layers: 3 }))
    })
    expect(await problemsOf(layers)).toEqual(['config.json says 3 layers, the graph has 2'])
  })

  it('key/value heads and EOS ids against the graph', async () => {
    const heads = await variant(async (d) => {
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'))
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, num_key_value_heads: 4 }))
    })
    expect(await problemsOf(heads)).toEqual([
      "config.json says 4 key/value heads, the graph's KV cache has 2",
    ])
    const eos = await variant((d) =>
      writeFile(join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [0, 70000] })),
    )
    expect(await problemsOf(eos)).toEqual(['eos_token_id 70000 is outside the vocabulary of 4096 tokens'])
  })

  it('a missing external data file', async () => {
    const dir = join(root, 'external')
    await writeByoFolder(dir, { ...base, externalData: true })
    expect((await validateModelFolder(dirSource(dir))).info.externalData).toEqual(['onnx/model.onnx_data'])
    await unlink(join(dir, 'onnx/model.onnx_data'))
    expect(await problemsOf(dir)).toEqual([
      "missing file 'onnx/model.onnx_data' (external data of 'onnx/model.onnx')",
    ])
  })

  it('a JSON file that does not parse', async () => {
    const dir = await variant((d) => writeFile(join(d, 'tokenizer_config.json'), '{"chat_template": '))
    expect((await problemsOf(dir))[0]).toMatch(/^'tokenizer_config\.json' is not valid JSON/)
  })

  /** The good folder with prometheus-mini's pre-tokenizer replaced by a Split on `pattern`, then ByteLevel. */
  const withSplit = (pattern: string) =>
    variant(async (d) => {
      const t = JSON.parse(await readFile(join(d, 'tokenizer.json'), 'utf8'))
      t.pre_tokenizer = {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      }
      await writeFile(join(d, 'tokenizer.json'), JSON.stringify(t))
    })

  it('a tokenizer regex that backtracks exponentially is refused, naming where it is', async () => {
    const dir = await withSplit('(a+)+$')
    expect(await problemsOf(dir)).toEqual([
      `'tokenizer.json' pre_tokenizer.pretokenizers[0].pattern.Regex "(a+)+$" is not safe for a backtracking regex engine: it backtracks exponentially at 'a+'`,
    ])
    // A normalizer's Replace and an ambiguous group are found too.
    const normalizer = await variant(async (d) => {
      const t = JSON.parse(await readFile(join(d, 'tokenizer.json'), 'utf8'))
      t.normalizer = { type: 'Replace', pattern: { Regex: '(x|x)*y' }, content: '' }
      await writeFile(join(d, 'tokenizer.json'), JSON.stringify(t))
    })
    expect(await problemsOf(normalizer)).toEqual([
      expect.stringMatching(
        /^'tokenizer\.json' normalizer\.pattern\.Regex "\(x\|x\)\*y" is not safe .* exponentially/,
      ),
    ])
  })

  it('the standard GPT-2, Llama 3 and Qwen2 split patterns are accepted', async () => {
    for (const pattern of [
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ]) {
      const v = await validateModelFolder(dirSource(await withSplit(pattern)))
      expect(v.info.tokenizerVocabSize).toBe(4096)
    }
  })

  it('a chat template that renders without bound is refused; a large one too', async () => {
    const withTemplate = (template: string) =>
      variant(async (d) => {
        const c = JSON.parse(await readFile(join(d, 'tokenizer_config.json'), 'utf8'))
        await writeFile(join(d, 'tokenizer_config.json'), JSON.stringify({ ...c, chat_template: template }))
      })
    const started = Date.now()
    // 10^8 characters, asked for in one range and in nested loops.
    expect(await problemsOf(await withTemplate('{% for i in range(100000000) %}x{% endfor %}'))).toEqual([
      expect.stringMatching(
        /^the chat template \(tokenizer_config\.json chat_template\) is unbounded: .*range\(\) of 100000000/,
      ),
    ])
    expect(
      await problemsOf(
        await withTemplate('{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}'),
      ),
    ).toEqual([expect.stringMatching(/^the chat template .* is unbounded: .*more than/)])
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(await problemsOf(await withTemplate(`{{ '${'x'.repeat(70_000)}' }}`))).toEqual([
      expect.stringMatching(/^the chat template .* has 70008 characters, more than 65536/),
    ])
    const jinja = await variant((d) =>
      writeFile(join(d, 'chat_template.jinja'), '{% for i in range(100000000) %}x{% endfor %}'),
    )
    expect(await problemsOf(jinja)).toEqual([
      expect.stringMatching(/^the chat template \(chat_template\.jinja\)/),
    ])
  })
})
