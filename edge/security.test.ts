/**
 * Tenant boundaries (issue 20): a tenant's `admin` stays inside its tenant,
 * the platform's `operator` scope is separate and granted only by an
 * operator, a tenant admin cannot lift its keys past the deployment's limits,
 * and every route enforces the scope /openapi.json and docs/operations.md say
 * it needs.
 */
import { readFile } from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../core/adapters/memory-key-store.js'
import { SCOPES, type Scope } from '../core/ports/key-store.js'
import { FINE_TUNE_KIND } from '../core/records/fine-tunes.js'
import { makeTestEdge, type TestEdge } from '../test/helpers/edge-harness.js'
import { ensureKey, randomSecret } from './keys.js'

let t: TestEdge
beforeEach(async () => {
  t = await makeTestEdge({ env: { PGPT_RATE_LIMIT_RPM: '100', PGPT_RATE_LIMIT_TPM: '5000' } })
})
afterEach(async () => {
  await t.close()
})

type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } }

const call = (method: string, path: string, secret: string, body?: unknown) =>
  t.app.request(path, {
    method,
    headers: {
      authorization: `Bearer ${secret}`,
      ...(body === undefined || body instanceof FormData ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: body instanceof FormData ? body : JSON.stringify(body) }),
  })

const since = () => Math.floor(Date.now() / 1000) - 3600

async function requests(secret: string, query = ''): Promise<number> {
  const res = await call('GET', `/v1/usage?start_time=${since()}${query}`, secret)
  expect(res.status, await res.clone().text()).toBe(200)
  const page = (await res.json()) as { data: Array<{ results: Array<{ num_model_requests: number }> }> }
  return page.data.flatMap((b) => b.results).reduce((n, r) => n + r.num_model_requests, 0)
}

const complete = async (secret: string) =>
  expect(
    (await call('POST', '/v1/completions', secret, { model: 'echo-1', prompt: 'a b', max_tokens: 2 })).status,
  ).toBe(200)

describe('the operator scope', () => {
  it("shows a tenant admin only its tenant's usage; only an operator reads every tenant", async () => {
    await complete(t.keys.generate) // t1
    await complete(t.keys.other) // t2
    await complete(t.keys.other) // t2
    expect(await requests(t.keys.other)).toBe(2) // t2's admin: t2 only
    expect(await requests(t.keys.admin)).toBe(1) // t1's admin: t1 only
    const denied = await call('GET', `/v1/usage?start_time=${since()}&tenant=t1`, t.keys.other)
    expect(denied.status).toBe(403)
    expect(((await denied.json()) as ErrorBody).error.message).toContain('operator')
    expect(await requests(t.keys.operator)).toBe(3)
    expect(await requests(t.keys.operator, '&tenant=t1')).toBe(1)
  })

  it('lets only an operator publish or replace a public model', async () => {
    for (const query of ['name=mine&public=true', 'name=echo-1&public=true&replace=true']) {
      const res = await t.app.request(`/v1/admin/models?${query}`, {
        method: 'POST',
        headers: { ...t.auth(t.keys.admin), 'content-type': 'application/x-tar' },
        body: new Uint8Array(1024),
      })
      expect(res.status, query).toBe(403)
      const e = ((await res.json()) as ErrorBody).error
      expect(e).toMatchObject({ type: 'permission_error', param: 'public' })
      expect(e.message).toContain("'operator'")
    }
    // An operator key gets past the check to the folder's validation (an empty archive holds no files).
    const res = await t.app.request('/v1/admin/models?name=mine&public=true', {
      method: 'POST',
      headers: { ...t.auth(t.keys.operator), 'content-type': 'application/x-tar' },
      body: new Uint8Array(1024),
    })
    expect(res.status).toBe(400)
  })

  it('is granted only by an operator', async () => {
    const byAdmin = await call('POST', '/v1/admin/keys', t.keys.admin, { name: 'x', scopes: ['operator'] })
    expect(byAdmin.status).toBe(403)
    expect(((await byAdmin.json()) as ErrorBody).error).toMatchObject({
      type: 'permission_error',
      param: 'scopes',
    })
    const byOperator = await call('POST', '/v1/admin/keys', t.keys.operator, {
      name: 'x',
      scopes: ['admin', 'operator'],
    })
    expect(byOperator.status).toBe(201)
    const made = (await byOperator.json()) as { id: string; scopes: string[] }
    expect(made.scopes).toContain('operator')
    // A tenant admin of the operator key's tenant cannot revoke it; the operator can.
    const opsAdmin = await t.key('ops', ['admin'])
    const refused = await call('DELETE', `/v1/admin/keys/${made.id}`, opsAdmin)
    expect(refused.status).toBe(403)
    expect((await call('DELETE', `/v1/admin/keys/${made.id}`, t.keys.operator)).status).toBe(200)
  })

  it('is held by the bootstrap key (PGPT_API_KEY, the key npm start prints)', async () => {
    const rec = await ensureKey(new MemoryKeyStore(), randomSecret())
    expect(rec.scopes).toContain('operator')
    expect(rec.scopes).toContain('admin')
  })
})

describe("a tenant admin's key limits", () => {
  it('are capped by the tenant defaults; an operator may set higher', async () => {
    for (const [field, value] of [
      ['requests_per_minute', 101],
      ['tokens_per_minute', 5001],
    ] as const) {
      const res = await call('POST', '/v1/admin/keys', t.keys.admin, {
        name: 'fast',
        scopes: ['generate'],
        limits: { [field]: value },
      })
      expect(res.status, field).toBe(403)
      const e = ((await res.json()) as ErrorBody).error
      expect(e.param).toBe(`limits.${field}`)
      expect(e.message).toContain(`limits.${field}`)
    }
    const atCap = await call('POST', '/v1/admin/keys', t.keys.admin, {
      name: 'ok',
      scopes: ['generate'],
      limits: { requests_per_minute: 100, tokens_per_minute: 5000 },
    })
    expect(atCap.status).toBe(201)
    const higher = await call('POST', '/v1/admin/keys', t.keys.operator, {
      name: 'fast',
      scopes: ['generate'],
      limits: { requests_per_minute: 1000 },
    })
    expect(higher.status).toBe(201)
    const secret = ((await higher.json()) as { secret: string }).secret
    const res = await call('GET', '/v1/models', secret)
    expect(res.headers.get('x-ratelimit-limit-requests')).toBe('1000')
  })
})

function fileForm(purpose: 'batch' | 'fine-tune') {
  const line =
    purpose === 'batch'
      ? {
          custom_id: 'r1',
          method: 'POST',
          url: '/v1/chat/completions',
          body: { model: 'echo-1', messages: [{ role: 'user', content: 'hi' }] },
        }
      : {
          messages: [
            { role: 'user', content: 'hi' },
            { role: 'assistant', content: 'hello' },
          ],
        }
  const f = new FormData()
  f.set('purpose', purpose)
  f.set('file', new File([`${JSON.stringify(line)}\n`], 'in.jsonl'))
  return f
}

async function uploadFile(purpose: 'batch' | 'fine-tune'): Promise<string> {
  const res = await call('POST', '/v1/files', t.keys.admin, fileForm(purpose))
  expect(res.status, await res.clone().text()).toBe(200)
  return ((await res.json()) as { id: string }).id
}

describe('scopes on read and delete routes', () => {
  it("keeps a generate-only key from the tenant's files", async () => {
    const id = await uploadFile('batch')
    for (const [method, path] of [
      ['GET', '/v1/files'],
      ['GET', `/v1/files/${id}`],
      ['GET', `/v1/files/${id}/content`],
      ['DELETE', `/v1/files/${id}`],
    ] as const) {
      const res = await call(method, path, t.keys.generate)
      expect(res.status, `${method} ${path}`).toBe(403)
    }
    expect((await call('GET', `/v1/files/${id}/content`, t.keys.batchOnly)).status).toBe(200)
  })

  it("keeps a batch key from fine-tuning files, by the file's purpose", async () => {
    const training = await uploadFile('fine-tune')
    const batch = await uploadFile('batch')
    expect((await call('GET', `/v1/files/${training}/content`, t.keys.batchOnly)).status).toBe(403)
    expect((await call('DELETE', `/v1/files/${training}`, t.keys.batchOnly)).status).toBe(403)
    expect((await call('GET', '/v1/files?purpose=fine-tune', t.keys.batchOnly)).status).toBe(403)
    const listed = (await (await call('GET', '/v1/files', t.keys.batchOnly)).json()) as {
      data: { id: string }[]
    }
    expect(listed.data.map((f) => f.id)).toEqual([batch])
    expect((await call('GET', `/v1/files/${training}`, t.keys.admin)).status).toBe(200)
  })

  it("gives the tenant's webhook secret to admin keys only", async () => {
    await t.close()
    t = await makeTestEdge({ deps: { webhookSecret: async (tenant) => `whsec_${tenant}` } })
    expect((await call('GET', '/v1/webhooks/default/secret', t.keys.generate)).status).toBe(403)
    const res = await call('GET', '/v1/webhooks/default/secret', t.keys.admin)
    expect(await res.json()).toEqual({ object: 'webhook_secret', key: 'whsec_t1' })
  })

  it('cancels only generation jobs through /v1/jobs/{id}/cancel', async () => {
    for (const [kind, route] of [
      [FINE_TUNE_KIND, '/v1/fine_tuning/jobs/'],
      ['batch', '/v1/batches/'],
    ] as const) {
      const job = await t.deps.jobs.create({ tenant: 't1', kind, input: {} })
      const res = await call('POST', `/v1/jobs/${job.id}/cancel`, t.keys.generate, {})
      expect(res.status, kind).toBe(409)
      expect(((await res.json()) as ErrorBody).error.message, kind).toContain(route)
      expect((await t.deps.jobs.getById(job.id))?.cancelRequested, kind).toBeFalsy()
      expect((await t.deps.jobs.getById(job.id))?.state, kind).not.toBe('canceled')
    }
  })

  it("shows a fine-tuning job or a batch under /v1/jobs only to a key with that kind's scope", async () => {
    const ft = await t.deps.jobs.create({
      tenant: 't1',
      kind: FINE_TUNE_KIND,
      input: { training_file: 'file-x' },
    })
    const batch = await t.deps.jobs.create({ tenant: 't1', kind: 'batch', input: {} })
    // t.keys.admin holds generate (the route's scope) and fine-tune and batch (the kinds').
    for (const id of [ft.id, batch.id]) {
      expect((await call('GET', `/v1/jobs/${id}`, t.keys.generate)).status, id).toBe(403)
      expect((await call('GET', `/v1/jobs/${id}/stream`, t.keys.generate)).status, id).toBe(403)
      expect((await call('GET', `/v1/jobs/${id}`, t.keys.admin)).status, id).toBe(200)
    }
    const listed = (await (await call('GET', '/v1/jobs', t.keys.generate)).json()) as {
      data: { id: string }[]
    }
    expect(listed.data.map((j) => j.id)).not.toContain(ft.id)
    expect(listed.data.map((j) => j.id)).not.toContain(batch.id)
    const all = (await (await call('GET', '/v1/jobs', t.keys.admin)).json()) as { data: { id: string }[] }
    expect(all.data.map((j) => j.id)).toEqual(expect.arrayContaining([ft.id, batch.id]))
  })
})

type Operation = { 'x-required-scope'?: string }

/** The routes × scopes table of docs/operations.md's Security section: "METHOD /path" → scope. */
async function docsTable(): Promise<Map<string, string>> {
  const doc = await readFile(new URL('../docs/operations.md', import.meta.url), 'utf8')
  const section = doc.split(/^## /m).find((s) => s.startsWith('Security'))
  expect(section, 'docs/operations.md has a "## Security" section').toBeDefined()
  const table = new Map<string, string>()
  for (const m of section!.matchAll(/^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*`([^`]+)`\s*\|([^|]+)\|/gm))
    table.set(`${m[1]} ${m[2]}`, m[3]!.replaceAll('`', '').trim())
  return table
}

describe('every route declares the scope it enforces', () => {
  it('/openapi.json and the table in docs/operations.md agree, route for route', async () => {
    const spec = (await (await t.app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, Operation>>
    }
    const declared = new Map<string, string | undefined>()
    for (const [path, ops] of Object.entries(spec.paths))
      for (const [method, op] of Object.entries(ops))
        declared.set(`${method.toUpperCase()} ${path}`, op['x-required-scope'])
    expect(declared.size).toBeGreaterThan(20)
    for (const [route, scope] of declared) expect(scope, `${route} declares x-required-scope`).toBeDefined()
    expect(Object.fromEntries(await docsTable())).toEqual(Object.fromEntries(declared))
  })

  it('refuses a key that lacks the declared scope with 403, on every route', async () => {
    const spec = (await (await t.app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, Operation>>
    }
    let checked = 0
    for (const [path, ops] of Object.entries(spec.paths))
      for (const [method, op] of Object.entries(ops)) {
        const needs = (op['x-required-scope'] ?? '').split(' or ')
        if (!needs.every((s) => (SCOPES as readonly string[]).includes(s))) continue
        // Every other scope, so only the missing one can be why.
        const lacking = await t.key('t1', SCOPES.filter((s) => !needs.includes(s)) as Scope[])
        const url = path.replaceAll(/\{[^}]+\}/g, 'x')
        const res = await call(method.toUpperCase(), url, lacking, method === 'get' ? undefined : {})
        expect(res.status, `${method.toUpperCase()} ${path} without ${needs.join(' or ')}`).toBe(403)
        expect(((await res.json()) as ErrorBody).error.type).toBe('permission_error')
        checked++
      }
    expect(checked).toBeGreaterThan(20)
  })
})
