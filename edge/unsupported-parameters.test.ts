/**
 * OpenAI parameters PrometheusGPT does not implement are refused by name
 * (400 unsupported_parameter, `param` the field's path), never accepted and
 * ignored: a client asking for JSON or tools must not get prose with a 200.
 * Node's fetch and the official `openai` client against the edge on
 * @hono/node-server, with the echo worker answering the accepted requests.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../core/config.js'
import { manifestKey } from '../core/model-manifest.js'
import { startEchoWorker } from '../test/helpers/echo-worker.js'
import { manifest } from '../test/helpers/edge-harness.js'
import { createKey } from './keys.js'
import { type RunningEdge, startEdge } from './node.js'

let dir: string
let edge: RunningEdge
let worker: ReturnType<typeof startEchoWorker>
let secret: string
let client: OpenAI

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-unsupported-'))
  const config = parseConfig({ PGPT_DATA_DIR: dir, PGPT_LOG_LEVEL: 'silent', HOST: '127.0.0.1' })
  edge = await startEdge({ config, port: 0 })
  await edge.deps.store.put(manifestKey('echo-1'), JSON.stringify(manifest('echo-1', null)))
  worker = startEchoWorker({
    queue: edge.deps.queue,
    jobs: edge.deps.jobs,
    events: edge.deps.events,
    usage: edge.deps.usage,
  })
  ;({ secret } = await createKey(edge.deps.keys, { tenant: 't1', name: 'unsupported', scopes: ['generate'] }))
  client = new OpenAI({ apiKey: secret, baseURL: `${edge.url}/v1`, maxRetries: 0 })
})

afterAll(async () => {
  await worker?.stop()
  await edge?.close()
  rmSync(dir, { recursive: true, force: true })
})

const post = (path: string, body: unknown) =>
  fetch(`${edge.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } }

/** Asserts OpenAI's unsupported_parameter 400 naming `param`, and that no job was created for it. */
async function expectUnsupported(res: Response, param: string) {
  const body = (await res.json()) as ErrorBody
  expect({ status: res.status, ...body.error }).toMatchObject({
    status: 400,
    type: 'invalid_request_error',
    code: 'unsupported_parameter',
    param,
  })
  expect(body.error.message).toContain(`'${param}'`)
  expect(body.error.message).toMatch(/not supported/)
}

const chat = { model: 'echo-1', messages: [{ role: 'user', content: 'one two' }], max_tokens: 2 }
const completion = { model: 'echo-1', prompt: 'one two', max_tokens: 2 }

describe('unsupported parameters on POST /v1/chat/completions', () => {
  it.each<[string, unknown]>([
    ['tools', [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }]],
    ['tool_choice', 'auto'],
    ['response_format', { type: 'json_object' }],
    ['response_format', { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } }],
    ['functions', [{ name: 'f', parameters: { type: 'object' } }]],
    ['function_call', 'auto'],
    ['logit_bias', { '50256': -100 }],
    ['parallel_tool_calls', false],
    ['audio', { voice: 'alloy', format: 'wav' }],
    ['modalities', ['text', 'audio']],
    ['prediction', { type: 'content', content: 'x' }],
    ['reasoning_effort', 'low'],
    ['web_search_options', {}],
    ['store', true],
    ['service_tier', 'flex'],
    ['best_of', 2],
    ['not_an_openai_field', 1],
  ])('refuses %s (%j) by name', async (field, value) => {
    await expectUnsupported(await post('/v1/chat/completions', { ...chat, [field]: value }), field)
  })

  it.each<[string, Record<string, unknown>[]]>([
    [
      'messages[1].tool_calls',
      [
        { role: 'user', content: 'x' },
        {
          role: 'assistant',
          content: 'y',
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }],
        },
      ],
    ],
    [
      'messages[1].function_call',
      [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: 'y', function_call: { name: 'f', arguments: '{}' } },
      ],
    ],
    [
      'messages[1].refusal',
      [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: '', refusal: 'no' },
      ],
    ],
    ['messages[0].tool_call_id', [{ role: 'tool', content: '42', tool_call_id: 'c1' }]],
    [
      'messages[0].content[1].image_url',
      [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this?' },
            { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
          ],
        },
      ],
    ],
    [
      'messages[0].content[0].cache_control',
      [{ role: 'user', content: [{ type: 'text', text: 'x', cache_control: {} }] }],
    ],
  ])('refuses %s inside a message', async (param, messages) => {
    await expectUnsupported(await post('/v1/chat/completions', { ...chat, messages }), param)
  })

  it('refuses an unknown field of stream_options by its path', async () => {
    await expectUnsupported(
      await post('/v1/chat/completions', {
        ...chat,
        stream: true,
        stream_options: { include_obfuscation: true },
      }),
      'stream_options.include_obfuscation',
    )
  })

  it('names every unsupported field in the message, the first as param', async () => {
    const res = await post('/v1/chat/completions', { ...chat, tools: [], tool_choice: 'none' })
    const body = (await res.json()) as ErrorBody
    expect(res.status).toBe(400)
    expect(body.error).toMatchObject({ code: 'unsupported_parameter', param: 'tools' })
    expect(body.error.message).toContain("'tool_choice'")
  })

  it('accepts what plain SDK calls send and the fields whose value is what we do anyway', async () => {
    const res = await post('/v1/chat/completions', {
      ...chat,
      messages: [
        { role: 'system', content: 'be brief', name: 'sys' },
        { role: 'user', content: [{ type: 'text', text: 'one two' }] },
        // A reply sent back as the API returned it (refusal: null).
        { role: 'assistant', content: 'two one', refusal: null },
        { role: 'user', content: 'three four' },
      ],
      stream: false,
      n: 1,
      user: 'u-1',
      safety_identifier: 'hash-1',
      response_format: { type: 'text' },
      logit_bias: {},
      store: false,
      metadata: { team: 'a' },
      service_tier: 'auto',
      seed: 1,
    })
    expect(res.status).toBe(200)
    expect(
      ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content,
    ).toBe('four three')
    const nulls = await post('/v1/chat/completions', {
      ...chat,
      response_format: null,
      logit_bias: null,
      store: null,
      service_tier: null,
      metadata: null,
      stream_options: null,
    })
    expect(nulls.status).toBe(200)
  })

  it('the openai client raises BadRequestError with code unsupported_parameter', async () => {
    const err = await client.chat.completions
      .create({
        model: 'echo-1',
        messages: [{ role: 'user', content: 'x' }],
        response_format: { type: 'json_object' },
      })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.BadRequestError)
    expect(err).toMatchObject({ status: 400, code: 'unsupported_parameter', param: 'response_format' })
    const tools = await client.chat.completions
      .create({
        model: 'echo-1',
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { name: 'f' } }],
      })
      .catch((e: unknown) => e)
    expect(tools).toMatchObject({ status: 400, code: 'unsupported_parameter', param: 'tools' })
    // The same client's plain call still works.
    const ok = await client.chat.completions.create({
      model: 'echo-1',
      messages: [{ role: 'user', content: 'a b' }],
      response_format: { type: 'text' },
      stream: false,
      n: 1,
      user: 'u',
    })
    expect(ok.choices[0]!.message.content).toBe('b a')
  })
})

describe('unsupported parameters on POST /v1/completions', () => {
  it.each<[string, unknown]>([
    ['logit_bias', { '50256': -100 }],
    ['suffix', ' end'],
    ['best_of', 3],
    ['response_format', { type: 'json_object' }],
    ['tools', []],
    ['max_completion_tokens', 4],
    ['not_an_openai_field', true],
  ])('refuses %s (%j) by name', async (field, value) => {
    await expectUnsupported(await post('/v1/completions', { ...completion, [field]: value }), field)
  })

  it('accepts the defaults spelled out (best_of 1, an empty logit_bias) and harmless metadata', async () => {
    const res = await post('/v1/completions', {
      ...completion,
      best_of: 1,
      logit_bias: {},
      n: 1,
      stream: false,
      user: 'u-1',
    })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { choices: { text: string }[] }).choices[0].text).toBe('two one')
  })

  it('the openai client raises BadRequestError naming the field', async () => {
    const err = await client.completions
      .create({ model: 'echo-1', prompt: 'x', logit_bias: { '1': 5 } })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.BadRequestError)
    expect(err).toMatchObject({ code: 'unsupported_parameter', param: 'logit_bias' })
  })
})

describe('unsupported parameters on POST /v1/jobs', () => {
  it('refuses an unknown field of input, of a message in it, and of the body, by path', async () => {
    const jobs = async () => (await edge.deps.jobs.list('t1', { limit: 100 })).data.length
    const before = await jobs()
    await expectUnsupported(
      await post('/v1/jobs', {
        model: 'echo-1',
        input: { prompt: 'x', response_format: { type: 'json_object' } },
      }),
      'input.response_format',
    )
    await expectUnsupported(
      await post('/v1/jobs', {
        model: 'echo-1',
        input: { messages: [{ role: 'assistant', content: 'x', tool_calls: [] }] },
      }),
      'input.messages[0].tool_calls',
    )
    await expectUnsupported(
      await post('/v1/jobs', { model: 'echo-1', input: { prompt: 'x' }, tools: [] }),
      'tools',
    )
    expect(await jobs()).toBe(before)
  })
})

describe('the OpenAPI document', () => {
  it('still generates, with closed request objects', async () => {
    const res = await fetch(`${edge.url}/openapi.json`)
    expect(res.status).toBe(200)
    const doc = (await res.json()) as {
      components: {
        schemas: Record<string, { additionalProperties?: unknown; properties: Record<string, unknown> }>
      }
    }
    for (const name of [
      'ChatCompletionRequest',
      'CompletionRequest',
      'CreateJobRequest',
      'GenerationJobInput',
    ])
      expect(doc.components.schemas[name]?.additionalProperties, name).toBe(false)
    expect(Object.keys(doc.components.schemas.ChatCompletionRequest.properties)).toContain('response_format')
  })
})
