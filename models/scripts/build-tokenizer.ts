/**
 * Trains the prometheus-mini tokenizer (byte-level BPE, 4096 tokens) on the
 * public-domain corpora and writes models/prometheus-mini/tokenizer.json and
 * tokenizer_config.json. Deterministic: the same corpus gives the same files.
 *
 *   npx tsx models/scripts/build-tokenizer.ts [--vocab-size 4096] [--out dir]
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { saveTokenizer, trainTokenizer } from '../tokenizer/tokenizer.js'
import { publicDomainCorpus } from './corpus.js'

const { values } = parseArgs({
  options: {
    'vocab-size': { type: 'string', default: '4096' },
    out: { type: 'string', default: join(dirname(fileURLToPath(import.meta.url)), '..', 'prometheus-mini') },
  },
})

const started = performance.now()
const texts = publicDomainCorpus()
const files = trainTokenizer(texts, { vocabSize: Number(values['vocab-size']), maxLength: 2048 })
await saveTokenizer(values.out, files)
const chars = texts.reduce((n, t) => n + t.length, 0)
console.log(
  `tokenizer: ${values['vocab-size']} tokens from ${texts.length} documents (${(chars / 1e6).toFixed(1)}M chars) in ${((performance.now() - started) / 1000).toFixed(1)}s → ${values.out}`,
)
