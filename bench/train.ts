/**
 * Train-step throughput: our ONNX train-step graph on onnxruntime-node (CPU)
 * against a PyTorch implementation of the same architecture
 * (bench/train_torch.py, Debian's python3-torch with OpenBLAS pthreads), in
 * the same run, from the same initial weights on the same batches (Moby Dick,
 * prometheus-mini tokenizer), with the same optimizer (clipped AdamW, warmup +
 * cosine). Reports tokens/s (first step excluded as warm-up), the ratio, and
 * the loss after N steps. Ours runs twice: updated state written into
 * preallocated swapped tensors (IO-binding style) and fed back as fresh outputs.
 *
 *   npx tsx bench/train.ts [--steps 8] [--batch 4] [--seq-len 256] [--threads 2] [--python /usr/bin/python3]
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseConfig } from '../models/config.js'
import { randomWeights, weightShapes } from '../models/llama/weights.js'
import { writeSafetensors } from '../models/safetensors.js'
import { mobyDickTexts } from '../models/scripts/corpus.js'
import { BatchSchedule, makeBatch, pack, splitDataset } from '../models/train/data.js'
import { miniTokenizer } from '../models/train/fixtures.js'
import { freshState, TrainSession } from '../models/train/session.js'
import { buildTrainGraphs, hfParams } from '../models/train/step-graph.js'

const { values: a } = parseArgs({
  options: {
    steps: { type: 'string', default: '8' },
    batch: { type: 'string', default: '4' },
    'seq-len': { type: 'string', default: '256' },
    threads: { type: 'string', default: '2' },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
})
const steps = Number(a.steps)
const B = Number(a.batch)
const T = Number(a['seq-len'])
const threads = Number(a.threads)

const { tok } = await miniTokenizer()
const c = parseConfig({
  vocabSize: tok.vocabSize,
  hiddenSize: 256,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 704,
  maxPositions: T,
})
const text = mobyDickTexts().join('\n').slice(0, 400_000)
const data = splitDataset(pack([{ ids: tok.encode(text) }], tok.eosTokenId), T, 0, 1)
const schedule = new BatchSchedule(data.trainWindows, B, 1)
const batches = Array.from({ length: steps }, (_, s) => makeBatch(data, schedule.starts(s)))
const init = randomWeights(c, { seed: 0 })
const optimizer = { lr: 1e-3, minLr: 1e-4, warmupSteps: 2, totalSteps: steps, weightDecay: 0.1, clipNorm: 1 }

const tokensPerSecond = (seconds: number[]) =>
  (B * T * (seconds.length - 1)) / seconds.slice(1).reduce((x, y) => x + y, 0)

async function ours(preallocate: boolean) {
  const t0 = performance.now()
  const graphs = await buildTrainGraphs({
    config: c,
    batch: B,
    seqLen: T,
    trainable: weightShapes(c),
    params: hfParams(c),
    optimizer,
  })
  const buildSeconds = (performance.now() - t0) / 1000
  const s = await TrainSession.create(graphs, c, B, T, freshState(init), { threads, preallocate })
  const losses: number[] = []
  const seconds: number[] = []
  for (const b of batches) {
    const t = performance.now()
    losses.push((await s.run(b)).loss)
    seconds.push((performance.now() - t) / 1000)
  }
  await s.release()
  return { losses, tokensPerSecond: tokensPerSecond(seconds), buildSeconds }
}

function torch(dir: string) {
  const r = spawnSync(a.python, [join(import.meta.dirname, 'train_torch.py'), dir], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  })
  if (r.status !== 0)
    throw new Error(`PyTorch reference failed (is python3-torch installed for ${a.python}?):\n${r.stderr}`)
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
    losses: number[]
    step_seconds: number[]
    torch: string
    threads: number
  }
  return { ...out, tokensPerSecond: tokensPerSecond(out.step_seconds) }
}

const dir = await mkdtemp(join(tmpdir(), 'pgpt-bench-train-'))
try {
  await writeFile(join(dir, 'init.safetensors'), writeSafetensors(init))
  const cat = (k: 'inputs' | 'targets') => {
    const all = new BigInt64Array(steps * B * T)
    for (const [i, b] of batches.entries()) all.set(b[k], i * B * T)
    return new Uint8Array(all.buffer)
  }
  await writeFile(join(dir, 'inputs.bin'), cat('inputs'))
  await writeFile(join(dir, 'targets.bin'), cat('targets'))
  await writeFile(
    join(dir, 'spec.json'),
    JSON.stringify({ config: c, hyper: { batchSize: B, seqLen: T }, optimizer, steps, threads }),
  )

  const load = loadavg()[0]
  const pre = await ours(true)
  const fed = await ours(false)
  const pt = torch(dir)
  const lossDiff = Math.max(...pre.losses.map((l, i) => Math.abs(l - pt.losses[i])))
  const row = (name: string, tps: number, loss: number) =>
    `| ${name} | ${tps.toFixed(0)} | ${(tps / pt.tokensPerSecond).toFixed(2)} | ${loss.toFixed(4)} |`
  console.log(`
train step, prometheus-mini shape (4 layers, hidden 256, 4/2 heads, MLP 704, vocab ${c.vocabSize}), batch ${B} × ${T} tokens, ${steps} steps, ${threads} threads, CPU
load average at start: ${load.toFixed(1)}; PyTorch ${pt.torch} (${pt.threads} threads); graph build ${pre.buildSeconds.toFixed(1)} s

| implementation | tokens/s | vs PyTorch | loss after ${steps} steps |
|---|---|---|---|
${row('onnxruntime train-step graph, preallocated outputs', pre.tokensPerSecond, pre.losses.at(-1)!)}
${row('onnxruntime train-step graph, outputs fed back', fed.tokensPerSecond, fed.losses.at(-1)!)}
${row('PyTorch eager', pt.tokensPerSecond, pt.losses.at(-1)!)}

max |loss difference| ours vs PyTorch over the ${steps} steps: ${lossDiff.toExponential(2)}
losses (ours):    ${pre.losses.map((l) => l.toFixed(4)).join(' ')}
losses (PyTorch): ${pt.losses.map((l) => l.toFixed(4)).join(' ')}`)
} finally {
  await rm(dir, { recursive: true, force: true })
}
