/**
 * The Files API through the official `openai` client against the edge on
 * @hono/node-server (local profile: folder store under PGPT_DATA_DIR): upload,
 * retrieve, list with a purpose filter, download, delete; a bad line is the
 * SDK's BadRequestError naming the line; another tenant's id is NotFoundError.
 * Retention: an upload's `expires_after` shows as `expires_at`, the file is
 * gone from every route once the edge's clock passes it, and the edge's own
 * sweeper (PGPT_CLEANUP_INTERVAL_S) deletes it from the folder, and finished
 * jobs from the SQLite records, past their retention.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { fileContentKey, fileMetaKey } from '../../core/records/files.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'

let dir: string
let edge: RunningEdge
let acme: OpenAI
let other: OpenAI
/** Added to the edge's clock (ms): how far the retention test moves time on. */
let offset = 0

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-files-'))
  edge = await startEdge({
    config: parseConfig({
      PGPT_DATA_DIR: dir,
      PGPT_LOG_LEVEL: 'silent',
      HOST: '127.0.0.1',
      PGPT_CLEANUP_INTERVAL_S: '1',
    }),
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore(), clock: () => Date.now() + offset },
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

  // Last: it moves the edge's clock on, so every file here expires.
  it('expires_after shows as expires_at; past it the file is gone at once, and the edge sweeps it from disk', async () => {
    const text = `${chatExample(1)}\n`
    const f = await acme.files.create({
      file: await toFile(Buffer.from(text), 'short-lived.jsonl'),
      purpose: 'fine-tune',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    })
    expect(f.expires_at).toBe(f.created_at + 3600)
    expect((await acme.files.retrieve(f.id)).expires_at).toBe(f.created_at + 3600)
    // Out of OpenAI's bounds: a 400 naming the parameter.
    const bad = await acme.files
      .create({
        file: await toFile(Buffer.from(text), 'x.jsonl'),
        purpose: 'fine-tune',
        expires_after: { anchor: 'created_at', seconds: 60 },
      })
      .catch((e: unknown) => e)
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError)
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('expires_after')
    // A batch upload without expires_after gets the configured default (30 days, as OpenAI).
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
    expect(batchFile.expires_at).toBe(batchFile.created_at + 30 * 86_400)
    // A finished job in the edge's SQLite records.
    const job = await edge.deps.jobs.create({ tenant: 'acme', kind: 'generation', input: {} })
    await edge.deps.jobs.transition(job.id, 'running')
    await edge.deps.jobs.transition(job.id, 'succeeded', { output: 'done' })

    const onDisk = (key: string) => existsSync(`${join(dir, 'store', ...key.split('/'))}~obj`)
    expect(onDisk(fileContentKey('acme', f.id))).toBe(true) // the path is right: the file is there now
    expect(onDisk(fileMetaKey('acme', f.id))).toBe(true)

    // An hour on: gone from retrieve, content, delete and the listing at once.
    offset = 3600_000
    await expect(acme.files.retrieve(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    await expect(acme.files.content(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    await expect(acme.files.delete(f.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    const listed = []
    for await (const x of acme.files.list()) listed.push(x.id)
    expect(listed).toContain(batchFile.id)
    expect(listed).not.toContain(f.id)

    // The edge's sweeper (every second here) deletes the bytes and the record from the folder.
    await waitFor(() => !onDisk(fileContentKey('acme', f.id)) && !onDisk(fileMetaKey('acme', f.id)))
    expect(onDisk(fileContentKey('acme', batchFile.id))).toBe(true)
    expect(await edge.deps.jobs.getById(job.id)).not.toBeNull() // within PGPT_JOB_RETENTION_DAYS

    // 31 days on: the batch file (30 days) and the finished job (30 days' retention) go too.
    offset = 31 * 86_400_000
    await waitFor(
      async () => !onDisk(fileContentKey('acme', batchFile.id)) && !(await edge.deps.jobs.getById(job.id)),
    )
  })
})

async function waitFor(done: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the sweep')
    await new Promise((r) => setTimeout(r, 50))
  }
}
