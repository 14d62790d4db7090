/**
 * Generation throughput on CPU: our engine (prefill + KV-cache decode,
 * continuous batching) against transformers.js (`AutoModelForCausalLM.generate`,
 * same onnxruntime-node, same model folder), in one process, greedy, same
 * prompts, same max_new_tokens.
 *
 *   npx tsx bench/generation.ts [--model <folder>] [--tokens 64] [--concurrency 16] [--requests 4]
 *                               [--threads N] [--spin] [--rounds 3] [--skip-transformers]
 *                               [--graph serving|folder]
 *
 * Model: models/prometheus-mini when it has weights (onnx/model.onnx), else a
 * random-weight 6-layer × 384-hidden Llama built with the models/ toolkit
 * (cached in .tmp/bench-model-6x384). Workloads:
 *   1 request:  `--requests` prompts, one after another (tokens/s of a lone user);
 *   N concurrent: `--concurrency` prompts at once (aggregate tokens/s).
 * transformers.js gets the same: sequential generate() calls, then N
 * concurrent generate() calls (what a server without a batcher does).
 * Both count the tokens they actually produced (EOS can end a sequence early),
 * and the greedy texts are compared (they should be identical).
 *
 * transformers.js runs twice: with its defaults (as a user would run it), and
 * with the onnxruntime session options our engine sets (threads, no spinning):
 * the second isolates what the engine itself adds. Each contender's best of
 * `--rounds` interleaved runs is kept, as the CPU may be shared.
 */
import { mkdtemp, readFile, stat } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { MemoryObjectStore } from '../core/adapters/memory-object-store.js'
import { publishModelFolder } from '../core/model-publish.js'
import type { GenerationInput } from '../core/protocol.js'
import {
  parseConfig,
  randomWeights,
  readTokenizerFiles,
  trainTokenizer,
  writeModelFolder,
} from '../models/index.js'
import { sessionExtras } from '../workers/generation/decoder.js'
import { GenerationEngine } from '../workers/generation/engine.js'

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    tokens: { type: 'string', default: '64' },
    concurrency: { type: 'string', default: '16' },
    requests: { type: 'string', default: '4' },
    threads: { type: 'string' },
    spin: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    'skip-transformers': { type: 'boolean', default: false },
    /** 'folder' runs our engine on the folder's exported graph instead of its serving graph. */
    graph: { type: 'string', default: 'serving' },
  },
})
const MAX_TOKENS = Number(args.tokens)
const CONCURRENCY = Number(args.concurrency)
const SEQUENTIAL = Number(args.requests)
const THREADS = args.threads ? Number(args.threads) : undefined
const ROUNDS = Number(args.rounds)

const TEXT = [
  'The quick brown fox jumps over the lazy dog.',
  'Once upon a time, in a land far away, there lived a',
  'Prometheus stole fire from the gods and gave it to',
  'In the beginning the Universe was created. This has made a lot of people very angry and been widely regarded as a bad move.',
  'def fibonacci(n):',
  'The capital of France is',
  'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness,',
  'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse,',
]
const prompts = (n: number) =>
  Array.from({ length: n }, (_, i) => TEXT[i % TEXT.length] + (i >= TEXT.length ? ` (${i})` : ''))

async function exists(p: string) {
  return stat(p).then(
    () => true,
    () => false,
  )
}

async function modelFolder(): Promise<string> {
  if (args.model) return resolve(args.model)
  const mini = resolve('models/prometheus-mini')
  if ((await exists(join(mini, 'onnx/model.onnx'))) && (await exists(join(mini, 'config.json')))) return mini
  const dir = resolve('.tmp/bench-model-6x384')
  if (await exists(join(dir, 'onnx/model.onnx'))) return dir
  console.log('building a random-weight 6 x 384 Llama in', dir)
  const tokenizer = (await exists(join(mini, 'tokenizer.json')))
    ? await readTokenizerFiles(mini)
    : trainTokenizer(TEXT, { vocabSize: 512 })
  const vocab = (tokenizer.tokenizer as { model: { vocab: Record<string, number> } }).model.vocab
  const eos = vocab['<|endoftext|>']
  const config = parseConfig({
    vocabSize: Math.max(...Object.values(vocab)) + 1,
    hiddenSize: 384,
    numLayers: 6,
    numHeads: 6,
    numKvHeads: 2,
    intermediateSize: 1024,
    maxPositions: 1024,
    bosTokenId: eos,
    eosTokenId: eos,
    padTokenId: eos,
  })
  await writeModelFolder(dir, { config, weights: randomWeights(config, { seed: 1 }), tokenizer })
  return dir
}

interface Run {
  tokens: number
  seconds: number
  texts: string[]
}

const tps = (r: Run) => r.tokens / r.seconds

async function oursRun(engine: GenerationEngine, ps: string[], concurrent: boolean): Promise<Run> {
  const input = (prompt: string): GenerationInput => ({
    endpoint: 'completions',
    model: 'bench',
    prompt,
    sampling: {
      maxTokens: MAX_TOKENS,
      temperature: 0,
      topP: 1,
      topK: 0,
      presencePenalty: 0,
      frequencyPenalty: 0,
      repetitionPenalty: 1,
      stop: [],
      n: 1,
      logprobs: null,
    },
    stream: false,
    echo: false,
  })
  const t0 = performance.now()
  const outs = concurrent
    ? await Promise.all(ps.map((p) => engine.generate(input(p))))
    : await ps.reduce<Promise<Awaited<ReturnType<GenerationEngine['generate']>>[]>>(
        async (acc, p) => [...(await acc), await engine.generate(input(p))],
        Promise.resolve([]),
      )
  const seconds = (performance.now() - t0) / 1000
  return {
    tokens: outs.reduce((s, o) => s + o.usage.completionTokens, 0),
    seconds,
    texts: outs.map((o) => o.choices[0].text),
  }
}

// biome-ignore lint/suspicious/noExplicitAny: transformers.js model and tokenizer types are loose
type Any = any

async function transformersRun(model: Any, tokenizer: Any, ps: string[], concurrent: boolean): Promise<Run> {
  const one = async (prompt: string) => {
    const enc = tokenizer(prompt)
    const out = await model.generate({ ...enc, max_new_tokens: MAX_TOKENS, do_sample: false })
    const all = out.tolist()[0].map(Number) as number[]
    const inputLen = enc.input_ids.dims[1] as number
    const gen = all.slice(inputLen)
    return { tokens: gen.length, text: tokenizer.decode(gen, { skip_special_tokens: true }) as string }
  }
  const t0 = performance.now()
  const outs = concurrent
    ? await Promise.all(ps.map(one))
    : await ps.reduce<Promise<Array<{ tokens: number; text: string }>>>(
        async (acc, p) => [...(await acc), await one(p)],
        Promise.resolve([]),
      )
  const seconds = (performance.now() - t0) / 1000
  return { tokens: outs.reduce((s, o) => s + o.tokens, 0), seconds, texts: outs.map((o) => o.text) }
}

async function main() {
  const folder = await modelFolder()
  const config = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8'))
  console.log(
    `model ${folder}: ${config.num_hidden_layers} layers x ${config.hidden_size} hidden, vocab ${config.vocab_size}`,
  )
  console.log(
    `workload: greedy, max_new_tokens ${MAX_TOKENS}; 1 request x ${SEQUENTIAL} sequential; ${CONCURRENCY} concurrent`,
  )

  const store = new MemoryObjectStore()
  await publishModelFolder(store, folder, {
    id: 'bench',
    owner: null,
    contextLength: config.max_position_embeddings,
  })
  const engine = new GenerationEngine({
    store,
    cacheDir: await mkdtemp(join(tmpdir(), 'pgpt-bench-')),
    cacheBudgetBytes: 4 * 2 ** 30,
    maxBatchSize: Math.max(32, CONCURRENCY),
    intraOpNumThreads: THREADS,
    allowSpinning: args.spin,
    graph: args.graph === 'folder' ? 'folder' : 'serving',
  })
  const lease = await engine.cache.acquire('bench')
  console.log(
    `ours: ${lease.model.decoder.graph === 'serving' ? 'the serving graph (models/llama/serving.ts)' : "the folder's graph"}`,
  )
  lease.release()

  // transformers.js twice: as a user runs it (its session defaults), and with the
  // onnxruntime session options our engine uses (a control: what is left is the engine).
  const contenders: Array<{ label: string; model: Any; tokenizer: Any }> = []
  if (!args['skip-transformers']) {
    const { AutoModelForCausalLM, AutoTokenizer, env } = await import('@huggingface/transformers')
    env.allowRemoteModels = false
    env.allowLocalModels = true
    env.localModelPath = `${dirname(folder)}/`
    const name = basename(folder)
    const tokenizer = await AutoTokenizer.from_pretrained(name)
    const threads = THREADS ? { intraOpNumThreads: THREADS } : {}
    const load = (session_options: object) =>
      AutoModelForCausalLM.from_pretrained(name, { dtype: 'fp32', device: 'cpu', session_options })
    contenders.push({ label: 'transformers.js (defaults)', tokenizer, model: await load(threads) })
    contenders.push({
      label: 'transformers.js (our ORT options)',
      tokenizer,
      model: await load({
        ...threads,
        graphOptimizationLevel: 'all',
        interOpNumThreads: 1,
        ...sessionExtras({ allowSpinning: args.spin }),
      }),
    })
  }
  console.log(
    `machine: ${cpus().length} CPUs, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}; best of ${ROUNDS} interleaved rounds`,
  )
  console.log(
    `onnxruntime options: threads ${THREADS ?? 'default'}, spinning ${args.spin ? 'on' : 'off'} (ours and the control)`,
  )

  // warm-up (first runs allocate and JIT)
  await oursRun(engine, prompts(2), true)
  for (const c of contenders) await transformersRun(c.model, c.tokenizer, prompts(2), true)

  // Rounds interleave the contenders (in rotating order) and keep each one's best
  // run, so a burst of load from other processes hurts no one in particular.
  const table: string[] = []
  for (const [label, ps, concurrent] of [
    ['1 request', prompts(SEQUENTIAL), false],
    [`${CONCURRENCY} concurrent`, prompts(CONCURRENCY), true],
  ] as const) {
    const runners: Array<() => Promise<Run>> = [
      () => oursRun(engine, [...ps], concurrent),
      ...contenders.map((c) => () => transformersRun(c.model, c.tokenizer, [...ps], concurrent)),
    ]
    const best: Array<Run | null> = runners.map(() => null)
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < runners.length; k++) {
        const i = (k + round) % runners.length
        const run = await runners[i]()
        if (!best[i] || tps(run) > tps(best[i]!)) best[i] = run
      }
    }
    const ours = best[0]!
    const cells = [`${tps(ours).toFixed(1)} (${ours.tokens} tok, ${ours.seconds.toFixed(2)} s)`]
    contenders.forEach((c, j) => {
      const theirs = best[j + 1]!
      const same = ours.texts.filter((t, i) => t === theirs.texts[i]).length
      console.log(
        `  ${label} vs ${c.label}: greedy outputs identical for ${same}/${ours.texts.length} prompts`,
      )
      cells.push(
        `${tps(theirs).toFixed(1)} (${theirs.tokens} tok, ${theirs.seconds.toFixed(2)} s)`,
        `**${(tps(ours) / tps(theirs)).toFixed(2)}x**`,
      )
    })
    table.push(`| ${label} | ${cells.join(' | ')} |`)
  }

  console.log(
    `\n| workload | ours tok/s | ${contenders.map((c) => `${c.label} tok/s | ratio`).join(' | ')} |`,
  )
  console.log(`|---|---|${contenders.map(() => '---|---|').join('')}`)
  for (const row of table) console.log(row)
  await engine.close()
}

await main()
