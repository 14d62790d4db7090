import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { OpenAPIHono } from '@hono/zod-openapi'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { listAll } from '../../core/adapters/object-records.js'
import { fromZod } from '../../core/openai/zod-error.js'
import { fileContentKey, fileMetaKey, fileUsage } from '../../core/records/files.js'
import { sweepExpired } from '../../core/retention.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'
import type { AppEnv } from '../deps.js'
import { onError } from '../errors.js'
import { apiKeyAuth } from '../middleware/auth/index.js'
import { requestId } from '../middleware/request-id/index.js'
import { registerFiles } from './files.js'

let t: TestEdge
const dirs: string[] = []
afterEach(async () => {
  await t?.close()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})
const diskStore = async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgpt-files-'))
  dirs.push(root)
  return new FsObjectStore({ root })
}

const chatLine = (i: number) =>
  JSON.stringify({
    custom_id: `r${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'echo-1', messages: [{ role: 'user', content: `hi ${i}` }] },
  })

function form(content: string, purpose: string, filename = 'in.jsonl') {
  const f = new FormData()
  f.set('purpose', purpose)
  f.set('file', new File([content], filename, { type: 'application/jsonl' }))
  return f
}

const upload = (secret: string, body: FormData, app = t.app) =>
  app.request('/v1/files', { method: 'POST', headers: { authorization: `Bearer ${secret}` }, body })
const get = (path: string, secret: string, init: RequestInit = {}) =>
  t.app.request(path, { ...init, headers: { authorization: `Bearer ${secret}` } })

describe('Files API', () => {
  it('uploads, reads, lists, downloads and deletes a batch file, tenant-scoped', async () => {
    t = await makeTestEdge({ worker: false })
    const text = `${[1, 2, 3].map(chatLine).join('\n')}\n`
    const res = await upload(t.keys.admin, form(text, 'batch', 'requests.jsonl'))
    expect(res.status).toBe(200)
    const f = (await res.json()) as Record<string, unknown>
    expect(f).toMatchObject({
      object: 'file',
      bytes: new TextEncoder().encode(text).byteLength,
      filename: 'requests.jsonl',
      purpose: 'batch',
      status: 'processed',
    })
    expect(f.id).toMatch(/^file-[a-z0-9]+$/)
    const id = f.id as string
    expect(await t.deps.store.head(fileContentKey('t1', id))).not.toBeNull()
    expect(await t.deps.store.head(fileMetaKey('t1', id))).not.toBeNull()

    expect(await (await get(`/v1/files/${id}`, t.keys.admin)).json()).toEqual(f)
    const content = await get(`/v1/files/${id}/content`, t.keys.admin)
    expect(content.status).toBe(200)
    expect(await content.text()).toBe(text)

    // Another tenant, even with every scope, sees nothing.
    const other = await t.key('t2', ['generate', 'batch', 'fine-tune', 'admin'])
    expect((await get(`/v1/files/${id}`, other)).status).toBe(404)
    expect((await get(`/v1/files/${id}/content`, other)).status).toBe(404)
    expect((await get(`/v1/files/${id}`, other, { method: 'DELETE' })).status).toBe(404)
    const otherList = (await (await get('/v1/files', other)).json()) as { data: unknown[] }
    expect(otherList.data).toEqual([])

    const del = await get(`/v1/files/${id}`, t.keys.admin, { method: 'DELETE' })
    expect(await del.json()).toEqual({ id, object: 'file', deleted: true })
    expect((await get(`/v1/files/${id}`, t.keys.admin)).status).toBe(404)
    expect(await t.deps.store.head(fileContentKey('t1', id))).toBeNull()
  })

  it('lists newest first with a purpose filter and an after cursor', async () => {
    t = await makeTestEdge({ worker: false })
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const r = await upload(t.keys.admin, form(chatLine(i), 'batch'))
      ids.push(((await r.json()) as { id: string }).id)
      await new Promise((r) => setTimeout(r, 3))
    }
    const ft = await upload(
      t.keys.admin,
      form('{"prompt":"a","completion":"b"}\n{"prompt":"c","completion":"d"}\n', 'fine-tune'),
    )
    expect(ft.status).toBe(200)
    const ftId = ((await ft.json()) as { id: string }).id
    const page = async (q: string) =>
      (await (await get(`/v1/files${q}`, t.keys.admin)).json()) as {
        data: Array<{ id: string }>
        has_more: boolean
        last_id: string
      }
    expect((await page('')).data.map((f) => f.id)).toEqual([ftId, ...ids.reverse()])
    const p1 = await page('?purpose=batch&limit=2')
    expect(p1.data.map((f) => f.id)).toEqual(ids.slice(0, 2))
    expect(p1.has_more).toBe(true)
    const p2 = await page(`?purpose=batch&limit=2&after=${p1.last_id}`)
    expect(p2.data.map((f) => f.id)).toEqual(ids.slice(2))
    expect(p2.has_more).toBe(false)
    expect((await page('?purpose=fine-tune')).data.map((f) => f.id)).toEqual([ftId])
  })

  it.each([
    ['bad JSON on line 2', 'batch', `${chatLine(1)}\n{oops\n`, /line 2: invalid JSON/],
    [
      'a repeated custom_id',
      'batch',
      `${chatLine(1)}\n\n${chatLine(1)}\n`,
      /line 3: custom_id 'r1' repeats line 1/,
    ],
    [
      'an unknown url',
      'batch',
      JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/embeddings', body: {} }),
      /line 1: 'url'/,
    ],
    [
      'a fine-tune line without assistant',
      'fine-tune',
      '{"messages":[{"role":"user","content":"x"}]}',
      /line 1: .*assistant/,
    ],
    ['an empty file', 'fine-tune', '\n\n', /no lines/],
  ])('refuses %s with a 400 naming the line', async (_what, purpose, text, message) => {
    t = await makeTestEdge({ worker: false })
    const res = await upload(t.keys.admin, form(text, purpose))
    expect(res.status).toBe(400)
    const err = ((await res.json()) as { error: { message: string; param: string } }).error
    expect(err.message).toMatch(message)
    expect(err.param).toBe('file')
    expect((await (await get('/v1/files', t.keys.admin)).json()) as { data: unknown[] }).toMatchObject({
      data: [],
    })
  })

  it('refuses an unknown purpose, a missing file and a key without the scope', async () => {
    t = await makeTestEdge({ worker: false })
    expect((await upload(t.keys.admin, form(chatLine(1), 'assistants'))).status).toBe(400)
    const noFile = new FormData()
    noFile.set('purpose', 'batch')
    expect((await upload(t.keys.admin, noFile)).status).toBe(400)
    const res = await upload(t.keys.generate, form(chatLine(1), 'batch'))
    expect(res.status).toBe(403)
  })

  it('answers 413 beyond its own size limit', async () => {
    t = await makeTestEdge({ worker: false })
    const app = new OpenAPIHono<AppEnv>({
      defaultHook: (r) => {
        if (!r.success) throw fromZod(r.error, r.target)
      },
    })
    app.onError(onError)
    app.use('*', requestId({ logger: t.deps.logger }))
    app.use('/v1/*', apiKeyAuth({ keys: t.deps.keys }))
    registerFiles(app, { deps: t.deps, tokens: undefined as never }, { maxFileBytes: 400 })
    const small = await upload(t.keys.admin, form(chatLine(1), 'batch'), app)
    expect(small.status).toBe(200)
    const big = await upload(t.keys.admin, form([1, 2, 3, 4, 5].map(chatLine).join('\n'), 'batch'), app)
    expect(big.status).toBe(413)
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('payload_too_large')
  })

  it('refuses a batch file beyond PGPT_MAX_BATCH_LINES with a 400 too_many_lines', async () => {
    t = await makeTestEdge({ worker: false, env: { PGPT_MAX_BATCH_LINES: '2' } })
    const three = await upload(t.keys.admin, form([1, 2, 3].map(chatLine).join('\n'), 'batch'))
    expect(three.status).toBe(400)
    const e = ((await three.json()) as { error: { code: string; message: string; param: string } }).error
    expect(e).toMatchObject({ code: 'too_many_lines', param: 'file' })
    expect(e.message).toContain('at most 2 requests')
    expect((await upload(t.keys.admin, form([1, 2].map(chatLine).join('\n'), 'batch'))).status).toBe(200)
  })

  it('refuses uploads beyond the per-tenant file count and byte caps with 400 storage_limit_exceeded', async () => {
    const one = chatLine(1)
    t = await makeTestEdge({
      worker: false,
      env: { PGPT_MAX_FILES_PER_TENANT: '2', PGPT_MAX_STORAGE_BYTES_PER_TENANT: String(1024 + one.length) },
    })
    const errorOf = async (r: Response) =>
      ((await r.json()) as { error: { code: string; message: string } }).error
    expect((await upload(t.keys.admin, form(one, 'batch'))).status).toBe(200)
    // Bytes: the second file would pass the byte cap.
    const big = await upload(t.keys.admin, form(`${one}\n${'\n'.repeat(1024)}`, 'batch'))
    expect(big.status).toBe(400)
    const eb = await errorOf(big)
    expect(eb.code).toBe('storage_limit_exceeded')
    expect(eb.message).toContain(`limit of ${1024 + one.length}`)
    expect((await upload(t.keys.admin, form(one, 'batch'))).status).toBe(200)
    // Count: a third file is refused; after a delete there is room again.
    const third = await upload(t.keys.admin, form(one, 'batch'))
    expect(third.status).toBe(400)
    const ec = await errorOf(third)
    expect(ec.code).toBe('storage_limit_exceeded')
    expect(ec.message).toContain('the limit (2)')
    const list = (await (await t.app.request('/v1/files', { headers: t.auth(t.keys.admin) })).json()) as {
      data: Array<{ id: string }>
    }
    expect(list.data).toHaveLength(2)
    const del = await t.app.request(`/v1/files/${list.data[0].id}`, {
      method: 'DELETE',
      headers: t.auth(t.keys.admin),
    })
    expect(del.status).toBe(200)
    expect((await upload(t.keys.admin, form(one, 'batch'))).status).toBe(200)
  })

  it('is a hard cap: concurrent uploads store exactly the cap, the rest are 400s; a delete and a retention purge free a slot', async () => {
    const k = 3
    // A store on disk: each upload's reads and writes take real I/O, so the uploads interleave.
    t = await makeTestEdge({
      worker: false,
      env: { PGPT_MAX_FILES_PER_TENANT: String(k) },
      deps: { store: await diskStore() },
    })
    const expiring = () => {
      const f = form(chatLine(1), 'batch')
      f.set('expires_after[anchor]', 'created_at')
      f.set('expires_after[seconds]', '3600')
      return f
    }
    // Every upload passes the old check (a listing) before any is stored: all ten raced past it.
    const results = await Promise.all(Array.from({ length: 10 }, () => upload(t.keys.admin, expiring())))
    const ok = results.filter((r) => r.status === 200)
    expect(ok).toHaveLength(k)
    for (const r of results.filter((r) => r.status !== 200)) {
      expect(r.status).toBe(400)
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('storage_limit_exceeded')
    }
    const stored = async () => {
      let n = 0
      for await (const _ of listAll(t.deps.store, 'files/t1/')) n++
      return n
    }
    expect(await stored()).toBe(k)
    expect(await fileUsage(t.deps.store, 't1')).toMatchObject({ files: k })
    // Another tenant has its own cap.
    expect((await upload(await t.key('t2', ['batch']), form(chatLine(1), 'batch'))).status).toBe(200)

    // A delete frees a slot, and only one.
    const [first] = (await Promise.all(ok.map((r) => r.json()))) as Array<{ id: string }>
    const del = await get(`/v1/files/${first.id}`, t.keys.admin, { method: 'DELETE' })
    expect(del.status).toBe(200)
    expect((await upload(t.keys.admin, form(chatLine(2), 'batch'))).status).toBe(200)
    expect((await upload(t.keys.admin, form(chatLine(3), 'batch'))).status).toBe(400)

    // The retention sweep deletes the expiring ones (an hour on) and frees their slots.
    const swept = await sweepExpired({ store: t.deps.store }, { now: Date.now() + 2 * 3600_000 })
    expect(swept.files).toHaveLength(k - 1)
    expect(await fileUsage(t.deps.store, 't1')).toMatchObject({ files: 1 })
    const again = await Promise.all(
      Array.from({ length: 4 }, () => upload(t.keys.admin, form(chatLine(4), 'batch'))),
    )
    expect(again.map((r) => r.status).sort()).toEqual([200, 200, 400, 400])
    expect(await stored()).toBe(k)
  })

  it('counts bytes in flight: concurrent uploads together past the byte cap store at most the cap', async () => {
    const one = chatLine(1)
    const size = new TextEncoder().encode(one).byteLength
    t = await makeTestEdge({
      worker: false,
      env: { PGPT_MAX_STORAGE_BYTES_PER_TENANT: String(Math.max(1024, size * 2)) },
      deps: { store: await diskStore() },
    })
    const n = Math.floor(Math.max(1024, size * 2) / size)
    const results = await Promise.all(
      Array.from({ length: n + 4 }, () => upload(t.keys.admin, form(one, 'batch'))),
    )
    expect(results.filter((r) => r.status === 200)).toHaveLength(n)
    expect(await fileUsage(t.deps.store, 't1')).toEqual({ files: n, bytes: n * size })
  })

  it('uploads have their own limit, above the JSON body limit of the whole app', async () => {
    t = await makeTestEdge({
      worker: false,
      env: { PGPT_MAX_BODY_BYTES: '2048', PGPT_MAX_FILE_BYTES: '65536' },
    })
    const text = `${Array.from({ length: 60 }, (_, i) => chatLine(i)).join('\n')}\n`
    expect(text.length).toBeGreaterThan(2048)
    expect((await upload(t.keys.admin, form(text, 'batch', 'big.jsonl'))).status).toBe(200)
    // A JSON body that large is still refused everywhere else.
    const json = await t.app.request('/v1/completions', {
      method: 'POST',
      headers: { ...t.auth(t.keys.admin), 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo-1', prompt: 'x'.repeat(4096) }),
    })
    expect(json.status).toBe(413)
    const huge = `${Array.from({ length: 1500 }, (_, i) => chatLine(i)).join('\n')}\n`
    expect((await upload(t.keys.admin, form(huge, 'batch', 'huge.jsonl'))).status).toBe(413)
  })

  it('writes expires_after as expires_at (form fields or JSON), and an expired file is a 404 at once', async () => {
    let now = Date.UTC(2026, 0, 1)
    t = await makeTestEdge({ worker: false, deps: { clock: () => now } })
    const withExpiry = (fields: Record<string, string>, purpose = 'batch') => {
      const f = form(chatLine(1), purpose)
      for (const [k, v] of Object.entries(fields)) f.set(k, v)
      return f
    }
    const created = Math.floor(now / 1000)
    const bracket = await upload(
      t.keys.admin,
      withExpiry({ 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600' }),
    )
    expect(bracket.status).toBe(200)
    const a = (await bracket.json()) as { id: string; created_at: number; expires_at: number }
    expect(a).toMatchObject({ created_at: created, expires_at: created + 3600 })
    const asJson = await upload(
      t.keys.admin,
      withExpiry({ expires_after: JSON.stringify({ anchor: 'created_at', seconds: 7200 }) }),
    )
    const b = (await asJson.json()) as { id: string; expires_at: number }
    expect(b.expires_at).toBe(created + 7200)

    const bad: Array<Record<string, string>> = [
      { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3599' },
      { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '2592001' },
      { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600.5' },
      { 'expires_after[anchor]': 'last_active_at', 'expires_after[seconds]': '3600' },
      { 'expires_after[seconds]': '3600' },
      { expires_after: 'soon' },
    ]
    for (const fields of bad) {
      const res = await upload(t.keys.admin, withExpiry(fields))
      expect(res.status, JSON.stringify(fields)).toBe(400)
      const err = ((await res.json()) as { error: { param: string; code: string; message: string } }).error
      expect(err).toMatchObject({ param: 'expires_after', code: 'invalid_value' })
      expect(err.message).toMatch(/3600.*2592000/)
    }

    now += 3600_000 // the first file's hour is up
    expect((await get(`/v1/files/${a.id}`, t.keys.admin)).status).toBe(404)
    expect((await get(`/v1/files/${a.id}/content`, t.keys.admin)).status).toBe(404)
    expect((await get(`/v1/files/${a.id}`, t.keys.admin, { method: 'DELETE' })).status).toBe(404)
    const listed = (await (await get('/v1/files', t.keys.admin)).json()) as { data: Array<{ id: string }> }
    expect(listed.data.map((f) => f.id)).toEqual([b.id])
    expect((await get(`/v1/files/${b.id}`, t.keys.admin)).status).toBe(200)
    now += 3600_000
    expect((await (await get('/v1/files', t.keys.admin)).json()) as { data: unknown[] }).toMatchObject({
      data: [],
    })
  })

  it('without expires_after, the purpose’s configured retention applies', async () => {
    t = await makeTestEdge({ worker: false })
    const expiry = async (purpose: string, text: string) =>
      (await (await upload(t.keys.admin, form(text, purpose))).json()) as {
        created_at: number
        expires_at: number | null
      }
    const ft = '{"prompt":"a","completion":"b"}\n'
    const batch = await expiry('batch', chatLine(1))
    expect(batch.expires_at).toBe(batch.created_at + 30 * 86_400)
    expect((await expiry('fine-tune', ft)).expires_at).toBeNull()
    await t.close()
    t = await makeTestEdge({
      worker: false,
      env: { PGPT_BATCH_FILE_RETENTION_DAYS: '0', PGPT_FINE_TUNE_FILE_RETENTION_DAYS: '2' },
    })
    expect((await expiry('batch', chatLine(1))).expires_at).toBeNull()
    const tuned = await expiry('fine-tune', ft)
    expect(tuned.expires_at).toBe(tuned.created_at + 2 * 86_400)
  })
})
