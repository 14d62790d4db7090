/**
 * Bring your own model, end to end over real pieces: folders of different
 * shapes in the Optimum layout (built by the test), published three ways
 * (the CLI's publish over the store, a tar.gz upload and a multipart upload to
 * POST /v1/admin/models), served by the real edge and a real worker PROCESS.
 * Greedy output through the API equals transformers.js's greedy output on the
 * same folder, token for token, for completions, chat completions (the
 * folder's chat template) and streams; a tenant's model is invisible to
 * another tenant; a bad upload is refused with the problem named.
 */
import { execFileSync } from 'node:child_process'
import { cp, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { AutoModelForCausalLM, AutoTokenizer, env, Tensor } from '@huggingface/transformers'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { dirSource } from '../../models/byo/fs-source.js'
import { publishByoModel } from '../../models/byo/publish.js'
import { type ByoShape, writeByoFolder } from '../helpers/byo-fixtures.js'
import { createHarness, type Harness, type WorkerChild } from '../helpers/worker-process-harness.js'

const TOKEN = 'byo-internal-token-0123456789'
const EOS = [0, 2]

type How = 'cli' | 'tar' | 'multipart'
interface Case {
  id: string
  shape: ByoShape
  how: How
  public: boolean
}

const CASES: Case[] = [
  {
    id: 'llama-gqa-tied',
    how: 'cli',
    public: false,
    shape: {
      heads: 4,
      kvHeads: 2,
      tied: true,
      positionIds: true,
      dtype: 'fp32',
      externalData: false,
      configStyle: 'llama',
    },
  },
  {
    id: 'gpt2-mha-untied-nopos-external',
    how: 'tar',
    public: false,
    shape: {
      heads: 4,
      kvHeads: 4,
      tied: false,
      positionIds: false,
      dtype: 'fp32',
      externalData: true,
      configStyle: 'gpt2',
    },
  },
  {
    id: 'llama-mqa-untied-fp16',
    how: 'multipart',
    public: true,
    shape: {
      heads: 4,
      kvHeads: 1,
      tied: false,
      positionIds: true,
      dtype: 'fp16',
      externalData: false,
      configStyle: 'llama',
      seed: 11,
    },
  },
  {
    id: 'llama-mha-tied-nopos-fp16-external',
    how: 'tar',
    public: false,
    shape: {
      heads: 2,
      kvHeads: 2,
      tied: true,
      positionIds: false,
      dtype: 'fp16',
      externalData: true,
      configStyle: 'llama',
      seed: 3,
    },
  },
]

let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let root: string
const keys: Record<'acmeAdmin' | 'acme' | 'globex' | 'operator', string> = {
  acmeAdmin: '',
  acme: '',
  globex: '',
  operator: '',
}

const api = (key: string, path: string, init: RequestInit = {}) =>
  fetch(`${edge.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers },
  })

async function files(dir: string): Promise<string[]> {
  const out = execFileSync('find', [dir, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')
  return out.map((f) => relative(dir, f)).sort()
}

/** Uploads a folder to POST /v1/admin/models as a tar.gz or a multipart form. */
async function upload(key: string, dir: string, query: string, how: 'tar' | 'multipart'): Promise<Response> {
  if (how === 'tar') {
    const tgz = execFileSync('tar', ['-czf', '-', '-C', dir, '.'], { maxBuffer: 1 << 28 })
    return fetch(`${edge.url}/v1/admin/models?${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/gzip' },
      body: tgz,
    })
  }
  const form = new FormData()
  for (const f of await files(dir))
    form.append(f, new Blob([await readFile(join(dir, f))]), f.split('/').pop())
  return fetch(`${edge.url}/v1/admin/models?${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}` },
    body: form,
  })
}

/** transformers.js's greedy continuation (ids after the prompt) on the local folder. */
async function theirGreedy(
  c: Case,
  input: { prompt?: string; messages?: object[] },
  maxNew: number,
  eos: number[] = EOS,
) {
  const tokenizer = await AutoTokenizer.from_pretrained(c.id)
  const model = await AutoModelForCausalLM.from_pretrained(c.id, {
    dtype: c.shape.dtype,
    ...(c.shape.externalData ? { use_external_data_format: true } : {}),
  })
  try {
    const text = input.messages
      ? (tokenizer.apply_chat_template(input.messages as never, {
          add_generation_prompt: true,
          tokenize: false,
        }) as string)
      : input.prompt!
    // A chat prompt carries its special tokens in the template text (as the engine encodes it).
    const encoded = tokenizer(text, { add_special_tokens: !input.messages })
    const ids = Array.from(encoded.input_ids.data as BigInt64Array, Number)
    const inputIds = new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length])
    const mask = new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length])
    const out = (await model.generate({
      input_ids: inputIds,
      attention_mask: mask,
      max_new_tokens: maxNew,
      do_sample: false,
      eos_token_id: eos,
    } as never)) as Tensor
    let gen = Array.from(out.data as BigInt64Array, Number).slice(ids.length)
    const stop = gen.findIndex((t) => eos.includes(t))
    if (stop >= 0) gen = gen.slice(0, stop)
    return {
      promptTokens: ids.length,
      ids: gen,
      tokens: gen.map((id) => tokenizer.decode([id], { skip_special_tokens: false })),
      text: tokenizer.decode(gen, { skip_special_tokens: true }),
    }
  } finally {
    await model.dispose()
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-byo-e2e-'))
  env.allowRemoteModels = false
  env.allowLocalModels = true
  env.localModelPath = root
  h = createHarness()
  const config = parseConfig({
    // These tests poll; rate limits have their own tests.
    PGPT_RATE_LIMIT_RPM: '1000000',
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  const k = (tenant: string, scopes: Array<'generate' | 'admin' | 'operator'>) =>
    createKey(edge.deps.keys, { tenant, name: `${tenant}-${scopes.join('-')}`, scopes }).then((r) => r.secret)
  keys.acmeAdmin = await k('acme', ['generate', 'admin'])
  keys.acme = await k('acme', ['generate'])
  keys.globex = await k('globex', ['generate', 'admin'])
  // Public models are the platform operator's to publish.
  keys.operator = await k('ops', ['admin', 'operator'])
  for (const c of CASES) await writeByoFolder(join(root, c.id), c.shape)
  worker = await h.startEdgeWorker('generation', edge.url, TOKEN, {
    PGPT_WORKER_METRICS_PORT: '0',
  })
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await h?.cleanup()
  await rm(root, { recursive: true, force: true })
})

describe('bring your own model: publish', () => {
  it.each(CASES)('publishes $id ($how)', async (c) => {
    const dir = join(root, c.id)
    if (c.how === 'cli') {
      // What `pgpt model publish <dir> --tenant acme` runs, over the edge's own store.
      const { manifest } = await publishByoModel(edge.deps.store, dirSource(dir), { id: c.id, owner: 'acme' })
      expect(manifest.owner).toBe('acme')
      return
    }
    const res = await upload(
      c.public ? keys.operator : keys.acmeAdmin,
      dir,
      `name=${c.id}${c.public ? '&public=true' : ''}`,
      c.how,
    )
    const body = (await res.json()) as Record<string, unknown>
    expect(res.status, JSON.stringify(body)).toBe(201)
    expect(body).toMatchObject({
      id: c.id,
      object: 'model',
      owned_by: c.public ? 'prometheus' : 'acme',
      context_length: 256,
      shape: {
        layers: 2,
        kv_heads: c.shape.kvHeads,
        dtype: c.shape.dtype === 'fp16' ? 'float16' : 'float32',
        position_ids: c.shape.positionIds,
        chat_template: true,
      },
    })
    const stored = (body.files as Array<{ path: string }>).map((f) => f.path)
    if (c.shape.externalData) expect(stored.some((p) => p.endsWith('.onnx_data'))).toBe(true)
  })

  it('the route is in the OpenAPI document with its upload types', async () => {
    const doc = (await (await fetch(`${edge.url}/openapi.json`)).json()) as {
      paths: Record<string, { post?: { requestBody?: { content: Record<string, unknown> } } }>
    }
    const post = doc.paths['/v1/admin/models']?.post
    expect(Object.keys(post?.requestBody?.content ?? {}).sort()).toEqual([
      'application/gzip',
      'application/octet-stream',
      'application/x-tar',
      'multipart/form-data',
    ])
  })

  it('GET /v1/models: acme sees its models, globex only the public one', async () => {
    const list = async (key: string) =>
      ((await (await api(key, '/v1/models')).json()) as { data: Array<{ id: string }> }).data.map((m) => m.id)
    expect(await list(keys.acme)).toEqual(CASES.map((c) => c.id).sort())
    expect(await list(keys.globex)).toEqual(CASES.filter((c) => c.public).map((c) => c.id))
    const hidden = CASES.find((c) => !c.public)!.id
    expect((await api(keys.globex, `/v1/models/${hidden}`)).status).toBe(404)
    const res = await api(keys.globex, '/v1/completions', {
      method: 'POST',
      body: JSON.stringify({ model: hidden, prompt: 'Hello', max_tokens: 2 }),
    })
    expect(res.status).toBe(404)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('model_not_found')
  })
})

describe('bring your own model: greedy output equals transformers.js token for token', () => {
  const prompt = 'The Congress of the United States'
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a river.' },
  ]

  it.each(CASES)('completions on $id', async (c) => {
    const theirs = await theirGreedy(c, { prompt }, 16)
    const res = await api(keys.acme, '/v1/completions', {
      method: 'POST',
      body: JSON.stringify({ model: c.id, prompt, max_tokens: 16, temperature: 0, logprobs: 0 }),
    })
    const body = (await res.json()) as {
      choices: Array<{ text: string; logprobs: { tokens: string[] } }>
      usage: { prompt_tokens: number; completion_tokens: number }
    }
    expect(res.status, JSON.stringify(body)).toBe(200)
    expect(theirs.ids.length).toBeGreaterThan(3)
    expect(new Set(theirs.ids).size).toBeGreaterThan(1)
    expect(body.choices[0].logprobs.tokens).toEqual(theirs.tokens)
    expect(body.choices[0].text).toBe(theirs.text)
    expect(body.usage.prompt_tokens).toBe(theirs.promptTokens)
  })

  it.each(CASES)('chat completions with the folder’s template on $id, streamed and not', async (c) => {
    const theirs = await theirGreedy(c, { messages }, 12)
    const res = await api(keys.acme, '/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify({ model: c.id, messages, max_tokens: 12, temperature: 0, logprobs: true }),
    })
    const body = (await res.json()) as {
      choices: Array<{ message: { content: string }; logprobs: { content: Array<{ token: string }> } }>
      usage: { prompt_tokens: number }
    }
    expect(res.status, JSON.stringify(body)).toBe(200)
    expect(body.usage.prompt_tokens).toBe(theirs.promptTokens)
    expect(body.choices[0].logprobs.content.map((t) => t.token)).toEqual(theirs.tokens)
    expect(body.choices[0].message.content).toBe(theirs.text)

    const stream = await api(keys.acme, '/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify({ model: c.id, messages, max_tokens: 12, temperature: 0, stream: true }),
    })
    expect(stream.status).toBe(200)
    const text = await stream.text()
    expect(text.trim().endsWith('data: [DONE]')).toBe(true)
    const pieces = text
      .split('\n')
      .filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
      .map(
        (l) =>
          (JSON.parse(l.slice(6)) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta
            .content ?? '',
      )
    expect(pieces.filter((p) => p).length).toBeGreaterThan(1)
    expect(pieces.join('')).toBe(theirs.text)
  })
})

describe('bring your own model: batching', () => {
  it.each([CASES[1], CASES[3]])(
    'concurrent prompts of different lengths on $id (no position_ids) each match transformers.js alone',
    async (c) => {
      const prompts = [
        'Hi',
        'The Congress of the United States shall',
        'Rivers',
        'Small models are fast and cheap',
      ]
      const theirs: Array<Awaited<ReturnType<typeof theirGreedy>>> = []
      for (const prompt of prompts) theirs.push(await theirGreedy(c, { prompt }, 10))
      const results = await Promise.all(
        prompts.map(async (prompt) => {
          const res = await api(keys.acme, '/v1/completions', {
            method: 'POST',
            body: JSON.stringify({ model: c.id, prompt, max_tokens: 10, temperature: 0, logprobs: 0 }),
          })
          expect(res.status).toBe(200)
          return (await res.json()) as { choices: Array<{ logprobs: { tokens: string[] } }> }
        }),
      )
      for (const [i, r] of results.entries())
        expect(r.choices[0].logprobs.tokens, prompts[i]).toEqual(theirs[i].tokens)
      // They really shared decode steps (rows of different lengths, left-padded).
      const line = worker.logs.find((l) => l.msg === 'worker /metrics and /health listening')
      const metrics = await (
        await fetch(`http://127.0.0.1:${(line as { port: number }).port}/metrics`)
      ).text()
      const max = new RegExp(`^pgpt:batch_size_max\\{model="${c.id}"\\} (\\d+)`, 'm').exec(metrics)
      expect(Number(max?.[1])).toBeGreaterThanOrEqual(2)
    },
  )
})

describe('bring your own model: generation_config.json', () => {
  it('an EOS id list ends generation where transformers.js ends it', async () => {
    const base = CASES[0]
    const prompt = 'Rivers of the world'
    const free = await theirGreedy(base, { prompt }, 12)
    // The 5th generated token becomes an end-of-sequence id, beside the usual ones.
    const stopId = free.ids[4]
    expect(free.ids.slice(0, 4)).not.toContain(stopId)
    const c: Case = { ...base, id: 'llama-gqa-eos-list' }
    const dir = join(root, c.id)
    await cp(join(root, base.id), dir, { recursive: true })
    const eos = [0, 2, stopId]
    await writeFile(
      join(dir, 'generation_config.json'),
      JSON.stringify({ bos_token_id: 0, eos_token_id: eos }),
    )
    await publishByoModel(edge.deps.store, dirSource(dir), { id: c.id, owner: 'acme' })

    const theirs = await theirGreedy(c, { prompt }, 12, eos)
    expect(theirs.ids).toEqual(free.ids.slice(0, 4))
    const res = await api(keys.acme, '/v1/completions', {
      method: 'POST',
      body: JSON.stringify({ model: c.id, prompt, max_tokens: 12, temperature: 0, logprobs: 0 }),
    })
    const body = (await res.json()) as {
      choices: Array<{ text: string; finish_reason: string; logprobs: { tokens: string[] } }>
      usage: { completion_tokens: number }
    }
    expect(res.status, JSON.stringify(body)).toBe(200)
    expect(body.choices[0].finish_reason).toBe('stop')
    expect(body.choices[0].text).toBe(theirs.text)
    expect(body.choices[0].logprobs.tokens.slice(0, 4)).toEqual(theirs.tokens)
    // The EOS token is counted (engine semantics) but not part of the text.
    expect(body.usage.completion_tokens).toBe(5)
  })
})

describe('bring your own model: the admin route refuses', () => {
  it('a folder that is not servable, naming the problem, and stores nothing', async () => {
    const dir = join(root, 'broken')
    await writeByoFolder(dir, CASES[1].shape)
    await unlink(join(dir, 'tokenizer.json'))
    await unlink(join(dir, 'onnx/model.onnx_data'))
    const res = await upload(keys.acmeAdmin, dir, 'name=broken', 'tar')
    const body = (await res.json()) as { error: { message: string; code: string } }
    expect(res.status).toBe(400)
    expect(body.error.code).toBe('invalid_model')
    expect(body.error.message).toContain("missing file 'tokenizer.json'")
    expect(body.error.message).toContain(
      "missing file 'onnx/model.onnx_data' (external data of 'onnx/model.onnx')",
    )
    expect((await edge.deps.store.list('models/broken/')).objects).toEqual([])
  })

  it('a caller without the admin scope, another tenant’s name, and a body that is not a tar', async () => {
    const dir = join(root, CASES[0].id)
    const taken = await upload(keys.globex, dir, `name=${CASES[0].id}`, 'tar')
    expect(taken.status).toBe(409)
    expect(((await taken.json()) as { error: { code: string } }).error.code).toBe('model_exists')
    const junk = await fetch(`${edge.url}/v1/admin/models?name=junk`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.acmeAdmin}`, 'content-type': 'application/x-tar' },
      body: new Uint8Array(2048).fill(7),
    })
    expect(junk.status).toBe(400)
    expect(((await junk.json()) as { error: { message: string } }).error.message).toMatch(
      /not a valid tar archive/,
    )
    // Last: the edge answers 403 before reading the upload, and the connection does not survive it.
    expect((await upload(keys.acme, dir, 'name=x', 'tar')).status).toBe(403)
  })
})
