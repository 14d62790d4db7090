/**
 * The Files API through the official `openai` client against the edge on
 * @hono/node-server (local profile: folder store under PGPT_DATA_DIR): upload,
 * retrieve, list with a purpose filter, download, delete; a bad line is the
 * SDK's BadRequestError naming the line; another tenant's id is NotFoundError.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { fileContentKey } from '../../core/records/files.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'

let dir: string
let edge: RunningEdge
let acme: OpenAI
let other: OpenAI

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-files-'))
  edge = await startEdge({
    config: parseConfig({ PGPT_DATA_DIR: dir, PGPT_LOG_LEVEL: 'silent', HOST: '127.0.0.1' }),
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  const client = async (tenant: string) =>
    new OpenAI({
      apiKey: (await createKey(edge.deps.keys, { tenant, name: 'e2e', scopes: ['batch', 'fine-tune'] }))
        .secret,
      baseURL: `${edge.url}/v1`,
      maxRetries: 0,
    })
  acme = await client('acme')
  other = await client('globex')
})

afterAll(async () => {
  await edge?.close()
  rmSync(dir, { recursive: true, force: true })
})

const chatExample = (i: number) =>
  JSON.stringify({
    messages: [
      { role: 'user', content: `Question ${i}?` },
      { role: 'assistant', content: `Answer ${i}.` },
    ],
  })

describe('Files API with the openai client', () => {
  it('uploads, retrieves, lists, downloads and deletes; tenant-scoped', async () => {
    const text = `${[1, 2, 3].map(chatExample).join('\n')}\n`
    const f = await acme.files.create({
      file: await toFile(Buffer.from(text), 'train.jsonl'),
      purpose: 'fine-tune',
    })
    expect(f).toMatchObject({
      object: 'file',
      purpose: 'fine-tune',
      filename: 'train.jsonl',
      bytes: Buffer.byteLength(text),
      status: 'processed',
    })
    expect(f.id).toMatch(/^file-/)
    // Stored in the folder store (PGPT_DATA_DIR/store) under the tenant's prefix.
    expect(edge.deps.store.name).toMatch(/fs/)
    expect((await edge.deps.store.head(fileContentKey('acme', f.id)))?.size).toBe(Buffer.byteLength(text))
    expect(await edge.deps.store.head(fileContentKey('globex', f.id))).toBeNull()

    expect(await acme.files.retrieve(f.id)).toEqual(f)
    expect(await (await acme.files.content(f.id)).text()).toBe(text)
    const batchFile = await acme.files.create({
      file: await toFile(
        Buffer.from(
          JSON.stringify({
            custom_id: 'x',
            method: 'POST',
            url: '/v1/completions',
            body: { model: 'm', prompt: 'p' },
          }),
        ),
        'b.jsonl',
      ),
      purpose: 'batch',
    })
    const all = []
    for await (const file of acme.files.list()) all.push(file.id)
    expect(all).toEqual([batchFile.id, f.id])
    expect((await acme.files.list({ purpose: 'fine-tune' })).data.map((x) => x.id)).toEqual([f.id])

    await expect(other.files.retrieve(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    await expect(other.files.content(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    await expect(other.files.delete(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    expect((await other.files.list()).data).toEqual([])

    expect(await acme.files.delete(f.id)).toEqual({ id: f.id, object: 'file', deleted: true })
    await expect(acme.files.retrieve(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
  })

  it('a bad line is a BadRequestError that names the line', async () => {
    const text = [
      chatExample(1),
      chatExample(2),
      '{"messages":[{"role":"user","content":"no answer"}]}',
    ].join('\n')
    const err = await acme.files
      .create({ file: await toFile(Buffer.from(text), 'bad.jsonl'), purpose: 'fine-tune' })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.BadRequestError)
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(/line 3: .*assistant/)
  })
})
