/**
 * `pgpt tokenizer train`: byte-level BPE on text files (or the bundled
 * public-domain corpus), written as Hugging Face tokenizer.json + tokenizer_config.json.
 */
import { readFile } from 'node:fs/promises'
import { defineCommand } from 'citty'
import { saveTokenizer, trainTokenizer } from '../models/index.js'
import { publicDomainCorpus } from '../models/scripts/corpus.js'

const train = defineCommand({
  meta: { name: 'train', description: 'Train a byte-level BPE tokenizer' },
  args: {
    files: { type: 'string', description: 'Comma-separated text files (default: the public-domain corpus)' },
    corpus: {
      type: 'string',
      default: 'public-domain',
      description: "Built-in corpus when no --files: 'public-domain'",
    },
    'vocab-size': {
      type: 'string',
      default: '4096',
      description: 'Vocabulary size, special tokens included',
    },
    'min-frequency': { type: 'string', default: '2', description: 'Least pair count to merge' },
    'max-length': {
      type: 'string',
      default: '2048',
      description: 'model_max_length in tokenizer_config.json',
    },
    out: { type: 'string', required: true, description: 'Output folder' },
  },
  async run({ args }) {
    let texts: string[]
    if (args.files) texts = await Promise.all(args.files.split(',').map((f) => readFile(f.trim(), 'utf8')))
    else if (args.corpus === 'public-domain') texts = publicDomainCorpus()
    else throw new Error(`--corpus: unknown corpus '${args.corpus}'`)
    const vocabSize = Number(args['vocab-size'])
    if (!Number.isInteger(vocabSize))
      throw new Error(`--vocab-size: '${args['vocab-size']}' is not an integer`)
    const started = performance.now()
    const files = trainTokenizer(texts, {
      vocabSize,
      minFrequency: Number(args['min-frequency']),
      maxLength: Number(args['max-length']),
    })
    await saveTokenizer(args.out, files)
    const size = Object.keys((files.tokenizer as { model: { vocab: object } }).model.vocab).length
    console.log(`wrote ${args.out}: ${size} tokens in ${((performance.now() - started) / 1000).toFixed(1)}s`)
  },
})

export default defineCommand({
  meta: { name: 'tokenizer', description: 'Train tokenizers' },
  subCommands: { train },
})
