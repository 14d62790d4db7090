import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as ort from 'onnxruntime-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { ApiError } from '../../core/errors.js'
import { createMetrics } from '../../core/metrics.js'
import type { GenerationInput, TokenEventData } from '../../core/protocol.js'
import { referenceForward } from '../../models/index.js'
import { completion, greedy } from '../../test/helpers/generation-inputs.js'
import {
  buildTestModel,
  byteChain,
  publishTestModel,
  type TestModel,
} from '../../test/helpers/tiny-models.js'
import { halfToFloat } from './decoder.js'
import { GenerationEngine } from './engine.js'
import { GenerationCancelled } from './errors.js'
import { argmax } from './sampling.js'

const CHAIN_TEXT = 'ab€c😀 END!xyz'

let store: MemoryObjectStore
let random: TestModel
let chain: TestModel
let engine: GenerationEngine
let metrics: ReturnType<typeof createMetrics>

beforeAll(async () => {
  store = new MemoryObjectStore()
  random = await buildTestModel({ kind: 'random', seed: 7 })
  // '>' then the bytes of CHAIN_TEXT one per token, then EOS
  chain = await buildTestModel({
    kind: 'chain',
    chain: [random.byteToken(0x3e), ...byteChain(random, CHAIN_TEXT), random.eosTokenId],
  })
  await publishTestModel(store, random, 'tiny')
  await publishTestModel(store, chain, 'chain')
  metrics = createMetrics()
  engine = new GenerationEngine({
    store,
    cacheDir: await mkdtemp(join(tmpdir(), 'pgpt-gen-cache-')),
    cacheBudgetBytes: 1 << 30,
    maxBatchSize: 16,
    maxWaitMs: 5,
    intraOpNumThreads: 1,
    metrics,
  })
})

afterAll(async () => {
  await engine?.close()
})

/** The plain greedy loop: no KV cache, the whole sequence through the graph every step. */
async function referenceGreedy(
  model: TestModel,
  promptIds: number[],
  steps: number,
  graph = 'onnx/model.onnx',
): Promise<number[]> {
  const session = await ort.InferenceSession.create(join(model.folder, graph))
  const c = model.config
  const D = c.hiddenSize / c.numHeads
  const fp16 = graph.includes('fp16')
  const ids = [...promptIds]
  try {
    for (let s = 0; s < steps; s++) {
      const T = ids.length
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, T]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
        position_ids: new ort.Tensor(
          'int64',
          BigInt64Array.from(ids, (_, i) => BigInt(i)),
          [1, T],
        ),
      }
      for (let i = 0; i < c.numLayers; i++)
        for (const kind of ['key', 'value'])
          feeds[`past_key_values.${i}.${kind}`] = fp16
            ? new ort.Tensor('float16', new Uint16Array(0), [1, c.numKvHeads, 0, D])
            : new ort.Tensor('float32', new Float32Array(0), [1, c.numKvHeads, 0, D])
      const out = await session.run(feeds)
      const last = (out.logits.data as Float32Array | Uint16Array).subarray(
        (T - 1) * c.vocabSize,
        T * c.vocabSize,
      )
      const next = argmax(last instanceof Uint16Array ? Array.from(last, halfToFloat) : last)
      ids.push(next)
      if (next === model.eosTokenId) break
    }
  } finally {
    await session.release()
  }
  return ids.slice(promptIds.length)
}

async function tokenBytes(ids: number[]): Promise<number[][]> {
  const lease = await engine.cache.acquire('tiny')
  try {
    return ids.map((id) => lease.model.tokenizer.tokenBytes(id))
  } finally {
    lease.release()
  }
}

describe('greedy decoding', () => {
  it.each(['The quick brown fox', 'Prometheus', 'x'])(
    'equals the no-cache reference loop for %j',
    async (prompt) => {
      const promptIds = await tokenize(prompt)
      const want = await referenceGreedy(random, promptIds, 20)
      const out = await engine.generate(completion('tiny', prompt, { maxTokens: 20, logprobs: 0 }))
      expect(out.usage.promptTokens).toBe(promptIds.length)
      expect(out.usage.completionTokens).toBe(want.length)
      // token by token (bytes identify a token of this byte-level vocabulary)
      expect(out.choices[0].logprobs!.map((lp) => lp.bytes)).toEqual(await tokenBytes(want))
      const lease = await engine.cache.acquire('tiny')
      expect(out.choices[0].text).toBe(lease.model.tokenizer.decode(want))
      lease.release()
    },
  )

  it('runs an fp16 graph (KV cache in float16) and equals its own no-cache reference', async () => {
    const half = await buildTestModel({ kind: 'random', seed: 7, onnx: ['fp16'] })
    await publishTestModel(store, half, 'tiny-fp16')
    const fp16Engine = new GenerationEngine({
      store,
      cacheDir: await mkdtemp(join(tmpdir(), 'pgpt-gen-cache-')),
      cacheBudgetBytes: 1 << 30,
      dtype: 'fp16',
    })
    try {
      const lease = await fp16Engine.cache.acquire('tiny-fp16')
      expect(lease.model.decoder.info.kvDType).toBe('float16')
      const promptIds = lease.model.tokenizer.encode('The quick brown fox')
      const want = await referenceGreedy(half, promptIds, 12, 'onnx/model_fp16.onnx')
      const out = await fp16Engine.generate(
        completion('tiny-fp16', 'The quick brown fox', { maxTokens: 12, logprobs: 0 }),
      )
      expect(out.choices[0].logprobs!.map((lp) => lp.bytes)).toEqual(
        want.map((id) => lease.model.tokenizer.tokenBytes(id)),
      )
      lease.release()
    } finally {
      await fp16Engine.close()
    }
  })

  it('matches the TypeScript reference forward on the first token', async () => {
    const promptIds = await tokenize('Small models generate')
    const logits = referenceForward(random.weights, random.config, promptIds)
    const V = random.config.vocabSize
    const first = argmax(logits.subarray((promptIds.length - 1) * V))
    const out = await engine.generate(
      completion('tiny', 'Small models generate', { maxTokens: 1, logprobs: 0 }),
    )
    expect(out.choices[0].logprobs!.map((lp) => lp.bytes)).toEqual(await tokenBytes([first]))
  })
})

async function tokenize(text: string): Promise<number[]> {
  const lease = await engine.cache.acquire('tiny')
  try {
    return lease.model.tokenizer.encode(text)
  } finally {
    lease.release()
  }
}

describe('continuous batching', () => {
  const prompts = [
    'The',
    'The quick brown fox jumps over the lazy dog.',
    'Grüße aus Köln',
    'Numbers 0123456789',
    'Prometheus brought fire to the people; the gods were not pleased.',
    'a',
  ]

  it('gives every greedy request the same tokens batched as alone', async () => {
    const alone: string[] = []
    for (const [i, p] of prompts.entries()) {
      const out = await engine.generate(completion('tiny', p, { maxTokens: 8 + 3 * i }))
      alone.push(out.choices[0].text)
    }
    const before = engine.cache.loaded().length
    expect(before).toBeGreaterThan(0)
    // all at once, plus two that join while the others decode
    const together = prompts.map((p, i) => engine.generate(completion('tiny', p, { maxTokens: 8 + 3 * i })))
    await new Promise((r) => setTimeout(r, 30))
    const late = [engine.generate(completion('tiny', prompts[1], { maxTokens: 11 }))]
    const lease = await engine.cache.acquire('tiny')
    const batcher = lease.model.batcher
    lease.release()
    const outs = await Promise.all([...together, ...late])
    expect(outs.slice(0, prompts.length).map((o) => o.choices[0].text)).toEqual(alone)
    expect(outs[prompts.length].choices[0].text).toBe(alone[1])
    expect(batcher.maxBatchSeen).toBeGreaterThanOrEqual(prompts.length)
    expect(batcher.batchSize).toBe(0)
  })

  it('gives seeded sampling the same tokens batched as alone', async () => {
    const s = { temperature: 1.2, topP: 0.95, topK: 40, seed: 11, maxTokens: 10 }
    const alone = []
    for (const p of prompts.slice(0, 3))
      alone.push((await engine.generate(completion('tiny', p, s))).choices[0].text)
    const together = await Promise.all(
      prompts.slice(0, 3).map((p) => engine.generate(completion('tiny', p, s))),
    )
    expect(together.map((o) => o.choices[0].text)).toEqual(alone)
  })
})

describe('sampling', () => {
  const sampled = { temperature: 1, topP: 0.9, topK: 50, maxTokens: 12 }

  it('reproduces the output for the same seed and differs for another', async () => {
    const a = await engine.generate(completion('tiny', 'The', { ...sampled, seed: 123 }))
    const b = await engine.generate(completion('tiny', 'The', { ...sampled, seed: 123 }))
    const c = await engine.generate(completion('tiny', 'The', { ...sampled, seed: 124 }))
    expect(b.choices[0].text).toBe(a.choices[0].text)
    expect(c.choices[0].text).not.toBe(a.choices[0].text)
  })

  it('samples with defaultSeed when the request gives no seed (a rerun of a job repeats its tokens)', async () => {
    const input = completion('tiny', 'The', { ...sampled, n: 2 })
    const a = await engine.generate(input, { defaultSeed: 42 })
    const b = await engine.generate(input, { defaultSeed: 42 })
    const seeded = await engine.generate(completion('tiny', 'The', { ...sampled, n: 2, seed: 42 }))
    expect(b.choices.map((c) => c.text)).toEqual(a.choices.map((c) => c.text))
    expect(seeded.choices.map((c) => c.text)).toEqual(a.choices.map((c) => c.text))
  })

  it('gives n choices that differ from each other, reproducibly', async () => {
    const input = completion('tiny', 'The', { ...sampled, seed: 5, n: 3 })
    const a = await engine.generate(input)
    const b = await engine.generate(input)
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2])
    expect(new Set(a.choices.map((c) => c.text)).size).toBe(3)
    expect(b.choices.map((c) => c.text)).toEqual(a.choices.map((c) => c.text))
    expect(a.usage.completionTokens).toBe(36)
  })

  it('returns logprobs with sorted top alternatives from the model distribution', async () => {
    const out = await engine.generate(completion('tiny', 'The', { maxTokens: 5, logprobs: 3 }))
    const lps = out.choices[0].logprobs!
    expect(lps).toHaveLength(5)
    for (const lp of lps) {
      expect(lp.top).toHaveLength(3)
      // greedy: the chosen token is the most likely one
      expect(lp.logprob).toBeCloseTo(lp.top[0].logprob, 6)
      expect(lp.top[0].logprob).toBeGreaterThanOrEqual(lp.top[1].logprob)
      expect(lp.top[1].logprob).toBeGreaterThanOrEqual(lp.top[2].logprob)
      expect(lp.top.reduce((s, t) => s + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1)
      expect(lp.bytes!.length).toBeGreaterThan(0)
    }
    expect(Buffer.from(lps.flatMap((lp) => lp.bytes!)).toString('utf8')).toBe(out.choices[0].text)
  })

  it('applies the repetition penalty (greedy output changes, repeats drop)', async () => {
    const plain = await engine.generate(completion('tiny', 'The', { maxTokens: 20 }))
    const penalised = await engine.generate(
      completion('tiny', 'The', { maxTokens: 20, repetitionPenalty: 5 }),
    )
    expect(penalised.choices[0].text).not.toBe(plain.choices[0].text)
    const distinct = (t: string) => new Set(t).size
    expect(distinct(penalised.choices[0].text)).toBeGreaterThan(distinct(plain.choices[0].text))
  })

  it('applies presence and frequency penalties to generated tokens', async () => {
    const plain = await engine.generate(completion('tiny', 'The', { maxTokens: 20, logprobs: 0 }))
    const freq = await engine.generate(
      completion('tiny', 'The', { maxTokens: 20, frequencyPenalty: 2, logprobs: 0 }),
    )
    const pres = await engine.generate(
      completion('tiny', 'The', { maxTokens: 20, presencePenalty: 2, logprobs: 0 }),
    )
    const distinctTokens = (o: typeof plain) =>
      new Set(o.choices[0].logprobs!.map((lp) => lp.bytes!.join(','))).size
    expect(distinctTokens(freq)).toBeGreaterThan(distinctTokens(plain))
    expect(distinctTokens(pres)).toBeGreaterThan(distinctTokens(plain))
  })

  it('starts an empty prompt from the BOS token', async () => {
    const out = await engine.generate(completion('tiny', '', { maxTokens: 3 }))
    expect(out.usage).toEqual({ promptTokens: 1, completionTokens: 3 })
  })
})

describe('text: stops, streaming, UTF-8', () => {
  const stream = async (input: GenerationInput) => {
    const events: TokenEventData[] = []
    const out = await engine.generate({ ...input, stream: true }, { onToken: (d) => void events.push(d) })
    return { out, events, streamed: events.map((e) => e.text).join('') }
  }

  it('walks the chain model to EOS: finish reason stop, multi-byte characters whole', async () => {
    const { out, events, streamed } = await stream(completion('chain', '>', { maxTokens: 40 }))
    expect(out.choices[0]).toMatchObject({ text: CHAIN_TEXT, finishReason: 'stop' })
    expect(streamed).toBe(CHAIN_TEXT)
    // € (3 bytes) and 😀 (4 bytes) came as one token per byte, and arrive as whole characters
    expect(events.map((e) => e.text)).toContain('€')
    expect(events.map((e) => e.text)).toContain('😀')
    for (const e of events) expect(e.text).not.toContain('\uFFFD')
    // bytes of CHAIN_TEXT + EOS
    expect(out.usage.completionTokens).toBe(Buffer.byteLength(CHAIN_TEXT) + 1)
  })

  it.each([
    { stop: ['END'], text: 'ab€c😀 ' },
    { stop: ['€c'], text: 'ab' },
    { stop: ['😀 E', 'xyz'], text: 'ab€c' },
    { stop: ['c😀', 'b'], text: 'a' },
    { stop: ['ENDX'], text: CHAIN_TEXT },
    { stop: ['yz!'], text: CHAIN_TEXT },
  ])('cuts at $stop exactly, streamed and final alike', async ({ stop, text }) => {
    const { out, streamed } = await stream(completion('chain', '>', { maxTokens: 40, stop }))
    expect(out.choices[0].text).toBe(text)
    expect(streamed).toBe(text)
    expect(out.choices[0].finishReason).toBe('stop')
  })

  it('stops at max tokens with finish reason length, never splitting a character', async () => {
    // 4 tokens: a, b and two of the three bytes of €
    const { out, streamed } = await stream(completion('chain', '>', { maxTokens: 4 }))
    expect(out.choices[0].finishReason).toBe('length')
    expect(out.usage.completionTokens).toBe(4)
    expect(streamed).toBe(out.choices[0].text)
    expect(out.choices[0].text.startsWith('ab')).toBe(true)
    const { out: five } = await stream(completion('chain', '>', { maxTokens: 5 }))
    expect(five.choices[0].text).toBe('ab€')
  })

  it('streams random text that concatenates to the final text', async () => {
    const { out, events, streamed } = await stream(
      completion('tiny', 'Grüße', { temperature: 1.5, seed: 3, maxTokens: 40, n: 2 }),
    )
    for (const c of out.choices) {
      expect(
        events
          .filter((e) => e.index === c.index)
          .map((e) => e.text)
          .join(''),
      ).toBe(c.text)
    }
    expect(streamed.length).toBeGreaterThan(0)
  })

  it('echoes the prompt for completions', async () => {
    const { out, streamed } = await stream({ ...completion('chain', '>', { maxTokens: 2 }), echo: true })
    expect(out.choices[0].text).toBe('>ab')
    expect(streamed).toBe('>ab')
  })

  it('renders chat messages with the folder chat template', async () => {
    const lease = await engine.cache.acquire('tiny')
    const tok = lease.model.tokenizer
    lease.release()
    const messages = [
      { role: 'system' as const, content: 'Be brief.' },
      { role: 'user' as const, content: 'Hi' },
    ]
    expect(tok.applyChatTemplate(messages)).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    )
    const out = await engine.generate({
      endpoint: 'chat.completions',
      model: 'tiny',
      messages,
      sampling: { ...greedy, maxTokens: 3 },
      stream: false,
      echo: false,
    })
    expect(out.usage.promptTokens).toBe(tok.encodeChat(messages).length)
  })
})

describe('errors and cancellation', () => {
  const codeOf = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => null,
      (e) => e,
    )
    expect(err).toBeInstanceOf(ApiError)
    return { status: (err as ApiError).status, code: (err as ApiError).code }
  }

  it('rejects a prompt longer than the context', async () => {
    const long = 'The quick brown fox jumps over the lazy dog. '.repeat(20)
    expect(await codeOf(engine.generate(completion('tiny', long)))).toEqual({
      status: 400,
      code: 'context_length_exceeded',
    })
  })

  it('stops at the context length with finish reason length', async () => {
    const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(2)
    const promptTokens = (await tokenize(prompt)).length
    expect(promptTokens).toBeLessThan(random.config.maxPositions)
    const out = await engine.generate(completion('tiny', prompt, { maxTokens: 500 }))
    expect(out.choices[0].finishReason).toBe('length')
    expect(out.usage.promptTokens + out.usage.completionTokens).toBe(random.config.maxPositions)
  })

  it('rejects an unknown model and more choices than this worker batches', async () => {
    expect(await codeOf(engine.generate(completion('nope', 'x')))).toEqual({
      status: 404,
      code: 'model_not_found',
    })
    expect(await codeOf(engine.generate(completion('../etc', 'x')))).toEqual({
      status: 404,
      code: 'model_not_found',
    })
    expect(await codeOf(engine.generate(completion('tiny', 'x', { n: 17 })))).toEqual({
      status: 400,
      code: 'invalid_parameter',
    })
  })

  it('cancels between tokens; other requests in the batch go on', async () => {
    const controller = new AbortController()
    let tokens = 0
    const cancelled = engine.generate(
      { ...completion('tiny', 'The', { maxTokens: 60, temperature: 1, seed: 1 }), stream: true },
      {
        signal: controller.signal,
        onToken: () => {
          if (++tokens === 3) controller.abort()
        },
      },
    )
    const other = engine.generate(completion('tiny', 'The quick', { maxTokens: 30 }))
    expect(await codeOf(cancelled)).toEqual({ status: 499, code: 'cancelled' })
    expect(tokens).toBeLessThan(60)
    const done = await other
    expect(done.usage.completionTokens).toBe(30)
  })

  it('cancelled mid-way, says what it generated: the text so far and the tokens, for metering', async () => {
    const prompt = 'The quick'
    const controller = new AbortController()
    let streamed = ''
    let events = 0
    const err = await engine
      .generate(
        { ...completion('tiny', prompt, { maxTokens: 60 }), stream: true },
        {
          signal: controller.signal,
          onToken: (d) => {
            streamed += d.text
            if (++events === 3) controller.abort()
          },
        },
      )
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(GenerationCancelled)
    const partial = (err as GenerationCancelled).partial!
    expect(partial.usage.promptTokens).toBe((await tokenize(prompt)).length)
    expect(partial.usage.completionTokens).toBeGreaterThanOrEqual(3)
    expect(partial.usage.completionTokens).toBeLessThan(60)
    expect(partial.choices).toEqual([{ index: 0, text: streamed, finishReason: null, logprobs: null }])
    // Greedy: the whole answer goes on from what the cancelled one had.
    const whole = await engine.generate(completion('tiny', prompt, { maxTokens: 60 }))
    expect(whole.choices[0].text.startsWith(partial.choices[0].text)).toBe(true)
    // Cancelled before it began: nothing generated, nothing to say.
    const early = new AbortController()
    early.abort()
    const none = await engine.generate(completion('tiny', prompt), { signal: early.signal }).catch((e) => e)
    expect(none).toBeInstanceOf(GenerationCancelled)
    expect((none as GenerationCancelled).partial).toBeUndefined()
  })
})

describe('metrics', () => {
  it('counts prompt and generation tokens, batch sizes, cache lookups and load time', async () => {
    const text = await metrics.registry.metrics()
    const value = (name: string) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*model="tiny"[^}]*\\})? (\\S+)$`, 'm').exec(text)
      return m ? Number(m[1]) : Number.NaN
    }
    expect(value('pgpt:prompt_tokens_total')).toBeGreaterThan(0)
    expect(value('pgpt:generation_tokens_total')).toBeGreaterThan(0)
    expect(value('pgpt:batch_size_max')).toBeGreaterThanOrEqual(6)
    expect(text).toMatch(/pgpt:model_cache_requests_total\{result="hit"\} [1-9]/)
    expect(text).toMatch(/pgpt:model_cache_requests_total\{result="miss"\} [1-9]/)
    expect(text).toMatch(/pgpt:model_load_duration_seconds_count\{model="tiny"\} 1/)
  })
})

describe('wiring', () => {
  it('is built from the worker config and loads models through the fs ObjectStore adapter', async () => {
    const { FsObjectStore } = await import('../../core/adapters/fs-store.js')
    const { parseConfig } = await import('../../core/config.js')
    const dataDir = await mkdtemp(join(tmpdir(), 'pgpt-gen-data-'))
    const fsStore = new FsObjectStore({ root: join(dataDir, 'store') })
    await publishTestModel(fsStore, chain, 'chain-fs')
    const config = parseConfig({
      PGPT_DATA_DIR: dataDir,
      PGPT_EXECUTION_PROVIDERS: 'cuda,cpu',
      PGPT_MODEL_CACHE_MB: '64',
    })
    const wired = GenerationEngine.fromConfig(config, { store: fsStore })
    try {
      const out = await wired.generate(completion('chain-fs', '>', { maxTokens: 40 }))
      expect(out.choices[0].text).toBe(CHAIN_TEXT)
      const lease = await wired.cache.acquire('chain-fs')
      expect(lease.model.decoder.provider).toBe('cpu')
      lease.release()
      expect(wired.cache.usedBytes()).toBeGreaterThan(0)
    } finally {
      await wired.close()
    }
  })
})
