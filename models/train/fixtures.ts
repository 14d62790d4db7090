/** Test fixtures: the prometheus-mini tokenizer, tiny configs and small seeded corpora. */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type LlamaConfig, parseConfig } from '../config.js'
import { mulberry32 } from '../llama/weights.js'
import {
  createTokenizer,
  type PrometheusTokenizer,
  readTokenizerFiles,
  type TokenizerFiles,
} from '../tokenizer/tokenizer.js'

export const MINI_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'prometheus-mini')

export async function miniTokenizer(): Promise<{ files: TokenizerFiles; tok: PrometheusTokenizer }> {
  const files = await readTokenizerFiles(MINI_DIR)
  return { files, tok: createTokenizer(files) }
}

export const tinyConfig = (tok: PrometheusTokenizer, o: Partial<LlamaConfig> = {}): LlamaConfig =>
  parseConfig({
    vocabSize: tok.vocabSize,
    hiddenSize: 32,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    intermediateSize: 64,
    maxPositions: 64,
    bosTokenId: tok.bosTokenId,
    eosTokenId: tok.eosTokenId,
    padTokenId: tok.padTokenId,
    ...o,
  })

/** Template sentences: many distinct words (high unigram entropy) in a fixed, learnable order. */
export function templateCorpus(n: number, seed: number): string[] {
  const rand = mulberry32(seed)
  const pick = (xs: string[]) => xs[Math.floor(rand() * xs.length)]
  const colors = ['red', 'green', 'blue', 'black', 'white', 'yellow']
  const animals = ['fox', 'dog', 'cat', 'horse', 'whale', 'bird']
  const places = ['the river', 'the hill', 'the house', 'the sea', 'the field']
  return Array.from(
    { length: n },
    () =>
      `The ${pick(colors)} ${pick(animals)} runs to ${pick(places)}, and the ${pick(animals)} follows it home.`,
  )
}

/** Prompt/completion records of a small domain: a capital-city lookup. */
export function capitalsJsonl(n: number, seed: number): string {
  const rand = mulberry32(seed)
  const pairs = [
    ['France', 'Paris'],
    ['Italy', 'Rome'],
    ['Spain', 'Madrid'],
    ['Japan', 'Tokyo'],
    ['Egypt', 'Cairo'],
    ['Peru', 'Lima'],
    ['Kenya', 'Nairobi'],
    ['Norway', 'Oslo'],
  ]
  return Array.from({ length: n }, () => {
    const [country, city] = pairs[Math.floor(rand() * pairs.length)]
    return JSON.stringify({
      prompt: `Q: What is the capital of ${country}?\nA:`,
      completion: ` The capital of ${country} is ${city}.`,
    })
  }).join('\n')
}
