import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { manifest } from '../../test/helpers/edge-harness.js'
import { MemoryObjectStore } from '../adapters/memory-object-store.js'
import {
  deleteModel,
  type ModelManifest,
  manifestKey,
  markModelsChanged,
  modelPrefix,
} from '../model-manifest.js'
import { publishModelFolder } from '../model-publish.js'
import { prepareGeneration } from '../openai/generation-request.js'
import type { ObjectStore } from '../ports/object-store.js'
import { createModelCatalog, estimateTokens, MAX_TOKENIZED_CHARS } from './model-catalog.js'

const WORD_LEVEL = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: { type: 'Whitespace' },
  post_processor: null,
  decoder: null,
  model: { type: 'WordLevel', vocab: { '[UNK]': 0, a: 1, b: 2 }, unk_token: '[UNK]' },
}

async function publish(store: MemoryObjectStore, m: ModelManifest, tokenizer?: unknown) {
  if (tokenizer !== undefined) {
    await store.put(
      modelPrefix(m.id) + 'tokenizer.json',
      typeof tokenizer === 'string' ? tokenizer : JSON.stringify(tokenizer),
    )
    m.files.push({ path: 'tokenizer.json', size: 1, sha256: '0'.repeat(64) })
  }
  await store.put(manifestKey(m.id), JSON.stringify(m))
}

describe('model catalog', () => {
  it('shows a tenant its own models and everyone’s, never another tenant’s', async () => {
    const store = new MemoryObjectStore()
    await publish(store, manifest('shared', null))
    await publish(store, manifest('mine', 't1'))
    await publish(store, manifest('theirs', 't2'))
    const cat = createModelCatalog(store)
    expect((await cat.list('t1')).map((m) => m.id)).toEqual(['mine', 'shared'])
    expect((await cat.list('t2')).map((m) => m.id)).toEqual(['shared', 'theirs'])
    expect(await cat.get('t1', 'theirs')).toBeNull()
    expect((await cat.get('t2', 'theirs'))?.owner).toBe('t2')
    expect(await cat.get('t1', 'missing')).toBeNull()
  })

  it('caches the listing for ttlMs, yet finds a model published meanwhile', async () => {
    let now = 0
    const store = new MemoryObjectStore()
    await publish(store, manifest('one', null))
    const cat = createModelCatalog(store, { ttlMs: 1000, now: () => now })
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
    await publish(store, manifest('two', null))
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
    expect((await cat.get('t', 'two'))?.id).toBe('two')
    await store.delete(manifestKey('one'))
    now = 1000
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['two'])
  })

  it('lists a model published or deleted by another writer on the next call, not ttlMs later', async () => {
    const store = new MemoryObjectStore()
    await publish(store, manifest('one', null))
    // The clock never moves: only the generation marker can make the catalog read again.
    const cat = createModelCatalog(store, { ttlMs: 5000, now: () => 0 })
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
    // Another process's publish (the CLI's, a worker's fine-tune): same store, not this catalog.
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-catalog-'))
    try {
      await writeFile(join(dir, 'config.json'), '{}')
      await publishModelFolder(store, dir, { id: 'two', owner: null, contextLength: 64 })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one', 'two'])
    expect((await cat.all()).map((m) => m.id)).toEqual(['one', 'two'])
    expect(await deleteModel(store, 'one')).toBe(true)
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['two'])
    // Any writer that marks the change is seen, owners included.
    await publish(store, manifest('theirs', 't2'))
    await markModelsChanged(store)
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['two'])
    expect((await cat.all()).map((m) => m.id)).toEqual(['theirs', 'two'])
  })

  it('answers a known model with no store read, and a listing with one HEAD while nothing changed', async () => {
    const inner = new MemoryObjectStore()
    await publish(inner, manifest('one', null))
    await markModelsChanged(inner)
    const calls: string[] = []
    const store = new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver)
        return typeof v === 'function'
          ? (...args: unknown[]) => {
              calls.push(`${String(prop)} ${String(args[0])}`)
              return v.apply(target, args)
            }
          : v
      },
    }) as ObjectStore
    const cat = createModelCatalog(store, { ttlMs: 5000, now: () => 0 })
    expect((await cat.get('t', 'one'))?.id).toBe('one')
    calls.length = 0
    // The completion path: a model in the kept listing costs no store read.
    for (let i = 0; i < 100; i++) expect((await cat.get('t', 'one'))?.id).toBe('one')
    expect(calls).toEqual([])
    // GET /v1/models: one HEAD of the marker, no listing while it is unchanged.
    for (let i = 0; i < 3; i++) expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
    expect(calls).toEqual(Array(3).fill('head models/.generation'))
  })

  it('keeps serving the listing when the marker cannot be read', async () => {
    const store = new MemoryObjectStore()
    await publish(store, manifest('one', null))
    const cat = createModelCatalog(store, { ttlMs: 5000, now: () => 0 })
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
    store.head = async () => {
      throw new Error('store down')
    }
    expect((await cat.list('t')).map((m) => m.id)).toEqual(['one'])
  })

  it('counts with the model’s tokenizer.json when published, else estimates ceil(chars/4)', async () => {
    const store = new MemoryObjectStore()
    await publish(store, manifest('tok', null), WORD_LEVEL)
    await publish(store, manifest('plain', null))
    const errors: string[] = []
    await publish(store, manifest('broken', null), '{not json')
    const cat = createModelCatalog(store, { onTokenizerError: (m) => errors.push(m) })
    const tok = await cat.tokenCounter((await cat.get('t', 'tok'))!)
    expect(tok.method).toBe('tokenizer')
    expect(tok.count('a b a b zebra')).toBe(5)
    const plain = await cat.tokenCounter((await cat.get('t', 'plain'))!)
    expect(plain.method).toBe('estimate')
    expect(plain.count('a b a b zebra')).toBe(estimateTokens('a b a b zebra'))
    expect(estimateTokens('abcde')).toBe(2)
    const broken = await cat.tokenCounter((await cat.get('t', 'broken'))!)
    expect(broken.method).toBe('estimate')
    expect(errors).toEqual(['broken'])
  })

  it("a tenant's tokenizer whose regex backtracks without bound is not loaded (the count is estimated)", async () => {
    const store = new MemoryObjectStore()
    const split = { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false }
    await publish(store, manifest('redos', 't1'), { ...WORD_LEVEL, pre_tokenizer: split })
    const errors: Array<[string, unknown]> = []
    const cat = createModelCatalog(store, { onTokenizerError: (m, err) => errors.push([m, err]) })
    const counter = await cat.tokenCounter((await cat.get('t1', 'redos'))!)
    expect(counter.method).toBe('estimate')
    const started = Date.now()
    expect(counter.count(`${'a'.repeat(30)}!`)).toBe(estimateTokens(`${'a'.repeat(30)}!`))
    expect(Date.now() - started).toBeLessThan(1000)
    expect(errors.map(([m]) => m)).toEqual(['redos'])
    expect(String(errors[0][1])).toContain('pre_tokenizer.pattern.Regex "(a+)+$"')
  })

  it(`a tenant's tokenizer is handed at most ${MAX_TOKENIZED_CHARS} characters of a text, the rest estimated`, async () => {
    const store = new MemoryObjectStore()
    // Accepted at publish, yet quadratic in a search over spaces: 64 Ki spaces took ~5 s whole.
    const split = { type: 'Split', pattern: { Regex: '\\s*x' }, behavior: 'Isolated', invert: false }
    await publish(store, manifest('quadratic', 't1'), { ...WORD_LEVEL, pre_tokenizer: split })
    const cat = createModelCatalog(store)
    const counter = await cat.tokenCounter((await cat.get('t1', 'quadratic'))!)
    expect(counter.method).toBe('tokenizer')
    const text = ' '.repeat(65_536)
    const started = Date.now()
    // The first MAX_TOKENIZED_CHARS spaces are one unknown piece: 1 token, then the estimate.
    expect(counter.count(text)).toBe(1 + estimateTokens(text.slice(MAX_TOKENIZED_CHARS)))
    expect(Date.now() - started).toBeLessThan(2000)
    expect(counter.count('a b')).toBe(1)
  })

  it('the context check uses the tokenizer count', async () => {
    const store = new MemoryObjectStore()
    await publish(store, manifest('tok8', null, 8), WORD_LEVEL)
    const models = createModelCatalog(store)
    // 9 one-letter words: 9 tokens by the tokenizer (the estimate would say 5).
    const r = {
      endpoint: 'completions' as const,
      model: 'tok8',
      fields: {},
      logprobs: null,
      echo: false,
      stream: false,
    }
    await expect(prepareGeneration(models, 't', { ...r, prompt: 'a a a a a a a a a' })).rejects.toMatchObject(
      {
        status: 400,
        code: 'context_length_exceeded',
      },
    )
    const ok = await prepareGeneration(models, 't', { ...r, prompt: 'a a a', maxTokens: 5 })
    expect(ok.promptTokens).toBe(3)
    expect(ok.tokenBudget).toBe(8)
  })
})
