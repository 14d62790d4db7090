/**
 * Fine-tunes served as LoRA adapters beside their base: the base opens once
 * with its LoRA-slot graph, each fine-tune takes a slot, and requests of the
 * base and of several fine-tunes share one batcher; every fine-tune generates
 * what its merged model generates alone. Slots are LRU, a held slot is never
 * replaced, and adapters that cannot take a slot are served merged.
 */
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../../core/adapters/memory-object-store.js'
import { createMetrics } from '../../core/metrics.js'
import { publishModelFolder } from '../../core/model-publish.js'
import type { GenerationInput, GenerationOutput, Sampling } from '../../core/protocol.js'
import { writeModelFolder } from '../../models/folder.js'
import { mulberry32 } from '../../models/llama/weights.js'
import type { Weights } from '../../models/safetensors.js'
import {
  adapterNames,
  type LoraConfig,
  mergeLora,
  TOKENS_DELTA,
  targetedWeights,
} from '../../models/train/lora.js'
import { greedy, completion as greedyCompletion } from '../../test/helpers/generation-inputs.js'
import { buildTestModel, publishTestModel, type TestModel } from '../../test/helpers/tiny-models.js'
import { GenerationEngine } from './engine.js'
import { ADAPTER_SERVING_MODULES, writeAdapterFolder } from './lora-graph.js'
import { LoraSlots, slotAdapterOf } from './lora-slots.js'

const SAMPLING: Partial<Sampling> = { maxTokens: 12, logprobs: 2 }
const completion = (model: string, prompt: string) => greedyCompletion(model, prompt, SAMPLING)

const PROMPTS = ['The quick brown fox', 'Prometheus brought', 'Numbers 0123', 'Small models generate']

let store: MemoryObjectStore
let base: TestModel
const adapters = new Map<string, { weights: Weights; lora: LoraConfig }>()
let engine: GenerationEngine
let metrics: ReturnType<typeof createMetrics>

/** Random PEFT adapters on the served modules; B non-zero, so the fine-tune differs from the base. */
function randomAdapter(lora: LoraConfig, seed: number): Weights {
  const rand = mulberry32(seed)
  const out: Weights = new Map()
  for (const name of targetedWeights(base.config, lora)) {
    const [o, i] = base.weights.get(name)!.shape
    const n = adapterNames(name)
    const fill = (len: number) => Float32Array.from({ length: len }, () => (rand() * 2 - 1) * 0.25)
    out.set(n.a, { shape: [lora.rank, i], data: fill(lora.rank * i) })
    out.set(n.b, { shape: [o, lora.rank], data: fill(o * lora.rank) })
  }
  return out
}

/** Publishes a fine-tune as an adapter folder, and the same fine-tune merged as `merged-<name>`. */
async function publishFineTune(
  name: string,
  rank: number,
  seed: number,
  edit?: (dir: string) => Promise<void>,
) {
  const lora: LoraConfig = { rank, alpha: 2 * rank, targetModules: ADAPTER_SERVING_MODULES }
  const weights = randomAdapter(lora, seed)
  adapters.set(name, { weights, lora })
  const dir = await mkdtemp(join(tmpdir(), 'pgpt-ft-adapter-'))
  await writeAdapterFolder(dir, {
    baseFolder: base.folder,
    baseModel: 'tiny',
    adapters: weights,
    lora,
    card: name,
  })
  await edit?.(dir)
  await publishModelFolder(store, dir, {
    id: `ft:tiny:acme:${name}:1`,
    owner: 'acme',
    contextLength: base.config.maxPositions,
    source: 'fine-tune',
    baseModel: 'tiny',
  })
  const merged = await mkdtemp(join(tmpdir(), 'pgpt-ft-merged-'))
  await writeModelFolder(merged, {
    config: base.config,
    weights: mergeLora(base.config, base.weights, weights, lora),
    tokenizer: base.tokenizer,
  })
  await publishModelFolder(store, merged, {
    id: `merged-${name}`,
    owner: null,
    contextLength: base.config.maxPositions,
  })
}

const ft = (name: string) => `ft:tiny:acme:${name}:1`
const newEngine = (o: Partial<ConstructorParameters<typeof GenerationEngine>[0]> = {}) =>
  mkdtemp(join(tmpdir(), 'pgpt-lora-cache-')).then(
    (cacheDir) =>
      new GenerationEngine({
        store,
        cacheDir,
        cacheBudgetBytes: 1 << 30,
        maxBatchSize: 16,
        maxWaitMs: 30,
        intraOpNumThreads: 1,
        ...o,
      }),
  )

/** Tokens and logprobs agree (greedy: the same text; logprobs within float error). */
function expectSame(a: GenerationOutput, b: GenerationOutput) {
  expect(a.choices[0].text).toBe(b.choices[0].text)
  const la = a.choices[0].logprobs!
  const lb = b.choices[0].logprobs!
  expect(la.map((l) => l.token)).toEqual(lb.map((l) => l.token))
  la.forEach((l, i) => {
    expect(Math.abs(l.logprob - lb[i].logprob)).toBeLessThan(1e-3)
  })
}

beforeAll(async () => {
  store = new MemoryObjectStore()
  base = await buildTestModel({ kind: 'random', seed: 7 })
  await publishTestModel(store, base, 'tiny')
  await publishFineTune('a', 4, 1)
  await publishFineTune('b', 8, 2)
  await publishFineTune('c', 2, 3)
  metrics = createMetrics()
  engine = await newEngine({ metrics, loraSlots: 3 })
}, 60_000)

afterAll(async () => {
  await engine?.close()
})

describe('fine-tunes as adapters beside their base', () => {
  const alone = new Map<string, GenerationOutput>()

  it('the base alone runs its plain serving graph: the LoRA-slot graph opens with the first adapter row', async () => {
    const first = await engine.generate(completion('tiny', PROMPTS[0]))
    const lease = await engine.acquire('tiny')
    try {
      expect(lease.model.decoder.graph).toBe('serving')
      expect(lease.model.decoder.adapterGraphOpened).toBe(false)
      await engine.generate(completion(ft('a'), PROMPTS[0]))
      expect(lease.model.decoder.adapterGraphOpened).toBe(true)
    } finally {
      lease.release()
    }
    // The base's answer does not depend on which graph ran it.
    expectSame(await engine.generate(completion('tiny', PROMPTS[0])), first)
  })

  it('each fine-tune generates what its merged model generates, and not what the base does', async () => {
    for (const name of ['a', 'b']) {
      const served = await engine.generate(completion(ft(name), PROMPTS[0]))
      const merged = await engine.generate(completion(`merged-${name}`, PROMPTS[0]))
      expect(served.model).toBe(ft(name))
      expectSame(served, merged)
      alone.set(name, served)
    }
    const plain = await engine.generate(completion('tiny', PROMPTS[0]))
    expect(plain.choices[0].text).not.toBe(alone.get('a')!.choices[0].text)
    expect(alone.get('a')!.choices[0].text).not.toBe(alone.get('b')!.choices[0].text)
    // Chat goes through the folder's chat template the same way.
    const chat = (model: string): GenerationInput => ({
      endpoint: 'chat.completions',
      model,
      messages: [{ role: 'user', content: 'Hello there' }],
      sampling: { ...greedy, ...SAMPLING },
      stream: false,
      echo: false,
    })
    expectSame(await engine.generate(chat(ft('a'))), await engine.generate(chat('merged-a')))
  })

  it('the base opens once: fine-tunes share its session and its batcher, each row on its slot, batched = alone', async () => {
    const inputs = [
      completion('tiny', PROMPTS[1]),
      completion(ft('a'), PROMPTS[1]),
      completion(ft('b'), PROMPTS[2]),
      completion(ft('a'), PROMPTS[3]),
      completion(ft('b'), PROMPTS[1]),
    ]
    const expected: GenerationOutput[] = []
    for (const input of inputs) expected.push(await engine.generate(input))
    const together = await Promise.all(inputs.map((input) => engine.generate(input)))
    together.forEach((out, i) => {
      expectSame(out, expected[i])
    })
    const lease = await engine.acquire('tiny')
    try {
      expect(lease.model.batcher.maxBatchSeen).toBeGreaterThanOrEqual(inputs.length)
      // The base runs the engine's fused serving graph with slots, built once beside its folder.
      expect((await stat(`${lease.model.folder}.lora-v2-serving-float32.onnx`)).size).toBeGreaterThan(0)
      // Slots hold `<id>@<adapter checksum>`.
      const keys = lease.model.adapterSlots!.loaded()
      expect(keys.map((k) => k?.split('@')[0]).sort()).toEqual([ft('a'), ft('b')])
    } finally {
      lease.release()
    }
    const text = await metrics.registry.metrics()
    expect(text).toMatch(/pgpt:model_load_duration_seconds_count\{model="tiny"\} 1\n/)
    expect(engine.cache.loaded()).not.toContain(ft('a'))
    expect(engine.cache.loaded()).toContain('tiny')
    expect(engine.adapters.loaded().sort()).toEqual([ft('a'), ft('b')])
    // Tokens are counted under the model each request named.
    expect(text).toMatch(new RegExp(`pgpt:generation_tokens_total\\{model="${ft('a')}"\\} \\d+`))
  })

  it('slots are LRU; a slot in use is not replaced, a third adapter waits for one, and a wait can be cancelled', async () => {
    const a = await engine.acquire(ft('a'))
    const b = await engine.acquire(ft('b'))
    expect(a.model.adapterIndex).not.toBe(b.model.adapterIndex)
    expect(a.model.batcher).toBe(b.model.batcher)
    let cGot = false
    const c = engine.acquire(ft('c')).then((l) => {
      cGot = true
      return l
    })
    await new Promise((r) => setTimeout(r, 50))
    expect(cGot).toBe(false)
    const ctrl = new AbortController()
    const cancelled = engine.acquire(ft('c'), ctrl.signal)
    ctrl.abort()
    await expect(cancelled).rejects.toMatchObject({ code: 'cancelled' })
    a.release()
    const cLease = await c
    // c took a's slot (the only idle one); b kept its own.
    expect(cLease.model.adapterIndex).toBe(a.model.adapterIndex)
    b.release()
    cLease.release()
    // a comes back in the least recently used slot (b's), and still generates as before.
    expectSame(await engine.generate(completion(ft('a'), PROMPTS[0])), alone.get('a')!)
    expectSame(
      await engine.generate(completion(ft('c'), PROMPTS[0])),
      await engine.generate(completion('merged-c', PROMPTS[0])),
    )
  })

  it('without slots (or for an adapter too large for them) a fine-tune is served merged, as a model of its own', async () => {
    const noSlots = await newEngine({ loraSlots: 0 })
    try {
      expectSame(await noSlots.generate(completion(ft('a'), PROMPTS[0])), alone.get('a')!)
      expect(noSlots.cache.loaded()).toContain(ft('a'))
      const lease = await noSlots.acquire('tiny')
      expect(lease.model.adapterSlots).toBeNull()
      lease.release()
    } finally {
      await noSlots.close()
    }
    const smallRank = await newEngine({ loraSlots: 3, loraMaxRank: 4 })
    try {
      expectSame(await smallRank.generate(completion(ft('b'), PROMPTS[0])), alone.get('b')!)
      expect(smallRank.cache.loaded()).toContain(ft('b'))
    } finally {
      await smallRank.close()
    }
  })

  it('an fp16 base takes adapters in fp16 slots', async () => {
    const half = await buildTestModel({ kind: 'random', seed: 7, onnx: ['fp32', 'fp16'] })
    await publishTestModel(store, half, 'tiny-fp16')
    const { weights, lora } = adapters.get('a')!
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-ft-adapter-'))
    await writeAdapterFolder(dir, {
      baseFolder: half.folder,
      baseModel: 'tiny-fp16',
      adapters: weights,
      lora,
      card: 'a',
    })
    const id = 'ft:tiny-fp16:acme:a:1'
    await publishModelFolder(store, dir, {
      id,
      owner: 'acme',
      contextLength: half.config.maxPositions,
      source: 'fine-tune',
      baseModel: 'tiny-fp16',
    })
    const fp16 = await newEngine({ dtype: 'fp16', loraSlots: 3 })
    try {
      const out = await fp16.generate(completion(id, PROMPTS[0]))
      const lease = await fp16.acquire(id)
      expect(lease.model.decoder.info.kvDType).toBe('float16')
      expect(lease.model.adapterIndex).toBeGreaterThan(0)
      lease.release()
      // fp16 rounding differs from the fp32 merged model: the same tokens, logprobs close.
      const ref = alone.get('a')!
      expect(out.choices[0].logprobs!.slice(0, 4).map((l) => l.token)).toEqual(
        ref.choices[0].logprobs!.slice(0, 4).map((l) => l.token),
      )
      expect(
        Math.abs(out.choices[0].logprobs![0].logprob - ref.choices[0].logprobs![0].logprob),
      ).toBeLessThan(5e-2)
    } finally {
      await fp16.close()
    }
  })

  it('refuses an adapter whose base was republished since it was trained', async () => {
    await publishFineTune('stale', 2, 4, async (dir) => {
      const path = join(dir, 'adapter', 'adapter_config.json')
      const config = JSON.parse(await readFile(path, 'utf8'))
      await writeFile(path, JSON.stringify({ ...config, revision: 'f'.repeat(64) }))
    })
    await expect(engine.generate(completion(ft('stale'), PROMPTS[0]))).rejects.toMatchObject({
      code: 'model_load_failed',
      message: expect.stringMatching(/has changed since it was trained/),
    })
  })
})

describe('LoraSlots', () => {
  it('pads lower ranks with zeros and re-lays slots out when a larger rank arrives', () => {
    const sites = new Map([['0.q_proj', { key: '0.q_proj', inDim: 3, outDim: 2 }]])
    const slots = new LoraSlots(sites, 'float32', 3)
    const adapter = (rank: number, base: number) => {
      const w: Weights = new Map()
      const stem = 'base_model.model.model.layers.0.self_attn.q_proj'
      w.set(`${stem}.lora_A.weight`, {
        shape: [rank, 3],
        data: Float32Array.from({ length: rank * 3 }, (_, i) => base + i),
      })
      w.set(`${stem}.lora_B.weight`, {
        shape: [2, rank],
        data: Float32Array.from({ length: 2 * rank }, (_, i) => -(base + i)),
      })
      return slotAdapterOf(w, { rank, alpha: 2 * rank })
    }
    slots.load(1, adapter(1, 10))
    expect(slots.rank).toBe(1)
    slots.load(2, adapter(2, 20))
    expect(slots.rank).toBe(2)
    const feeds = slots.feeds(2, BigInt64Array.of(1n, 2n))
    const A = feeds['lora.0.q_proj.A']
    expect(A.dims).toEqual([3, 3, 2])
    const a = A.data as Float32Array
    // slot 0 zeros; slot 1: A^T of rank 1 in column 0, column 1 zero; slot 2: A^T [3, 2].
    expect([...a.subarray(0, 6)]).toEqual([0, 0, 0, 0, 0, 0])
    expect([...a.subarray(6, 12)]).toEqual([10, 0, 11, 0, 12, 0])
    expect([...a.subarray(12, 18)]).toEqual([20, 23, 21, 24, 22, 25])
    const B = feeds['lora.0.q_proj.B'].data as Float32Array
    expect([...B.subarray(4, 8)]).toEqual([-10, -11, 0, 0])
    expect([...(feeds.lora_scale.data as Float32Array)]).toEqual([0, 2, 2])
    slots.load(1, null)
    expect([...(slots.feeds(1).lora_scale.data as Float32Array)]).toEqual([0, 0, 2])
    expect(() => slots.feeds(1, BigInt64Array.of(3n))).toThrow(/out of range/)
  })

  it('writes trainable tokens into the token tables (row k+1 for the k-th token), growing the rows as needed', () => {
    const sites = new Map([['0.q_proj', { key: '0.q_proj', inDim: 3, outDim: 2 }]])
    const adapter = (ids: number[], base: number) => {
      const w: Weights = new Map()
      const stem = 'base_model.model.model.layers.0.self_attn.q_proj'
      w.set(`${stem}.lora_A.weight`, { shape: [1, 3], data: new Float32Array(3) })
      w.set(`${stem}.lora_B.weight`, { shape: [2, 1], data: new Float32Array(2) })
      w.set(TOKENS_DELTA, {
        shape: [ids.length, 2],
        data: Float32Array.from({ length: ids.length * 2 }, (_, i) => base + i),
      })
      return slotAdapterOf(w, { rank: 1, alpha: 2, trainableTokens: ids })
    }
    // A graph without token slots cannot take such an adapter (it is served merged instead).
    expect(new LoraSlots(sites, 'float32', 3).unfit(adapter([4], 1))).toMatch(/no trainable-token slots/)
    const slots = new LoraSlots(sites, 'float32', 3, { vocab: 6, hidden: 2 })
    expect(slots.unfit(adapter([6], 1))).toMatch(/outside the base's vocabulary/)
    slots.load(1, adapter([4], 10))
    slots.load(2, adapter([1, 5], 20))
    const feeds = slots.feeds(2, BigInt64Array.of(1n, 2n))
    expect(feeds['lora.tokens.delta'].dims).toEqual([3, 3, 2])
    expect([...(feeds['lora.tokens.map'].data as BigInt64Array)].map(Number)).toEqual([
      ...[0, 0, 0, 0, 0, 0],
      ...[0, 0, 0, 0, 1, 0],
      ...[0, 1, 0, 0, 0, 2],
    ])
    expect([...(feeds['lora.tokens.ids'].data as BigInt64Array)].map(Number)).toEqual([
      0, 0, 0, 0, 4, 0, 0, 1, 5,
    ])
    expect([...(feeds['lora.tokens.delta'].data as Float32Array)]).toEqual([
      ...[0, 0, 0, 0, 0, 0],
      ...[0, 0, 10, 11, 0, 0], // slot 1 kept across the growth to 3 rows
      ...[0, 0, 20, 21, 22, 23],
    ])
    slots.load(2, null)
    expect([...(slots.feeds(1)['lora.tokens.map'].data as BigInt64Array)].slice(12).map(Number)).toEqual([
      0, 0, 0, 0, 0, 0,
    ])
  })
})
