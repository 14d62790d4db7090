/**
 * The edge inside workerd: edge/worker.ts bundled by wrangler (as `wrangler
 * deploy` would) and run by Miniflare with the bindings of wrangler.jsonc.
 * The Durable Object rate limiter and the Workers cache adapter also pass
 * their port's contract suites against the real workerd implementations.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Miniflare, Response as MiniflareResponse } from 'miniflare'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manifestKey } from '../core/model-manifest.js'
import { PreconditionFailedError } from '../core/ports/object-store.js'
import { createFile, fileContentKey, fileMetaKey, getFileObject } from '../core/records/files.js'
import { testEvents } from '../test/contracts/events.js'
import { testRateLimiter } from '../test/contracts/rate-limiter.js'
import { testResponseCache } from '../test/contracts/response-cache.js'
import { manifest } from '../test/helpers/edge-harness.js'
import { DurableObjectEvents, type EventsNamespace } from './adapters/durable-object-events.js'
import {
  DurableObjectRateLimiter,
  type RateLimiterNamespace,
} from './adapters/durable-object-rate-limiter.js'
import { type R2BucketLike, R2ObjectStore } from './adapters/r2-store.js'
import { type CacheLike, WorkersCache } from './adapters/workers-cache.js'

const KEY = 'pgpt_workerdbootstrapkey0001'
const INTERNAL = 'internal-token-workerd-0123456789'
let dir: string
let mf: Miniflare | undefined
let resolveReady: (m: Miniflare) => void
const ready = new Promise<Miniflare>((r) => {
  resolveReady = r
})

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-workerd-'))
  await promisify(execFile)(
    'npx',
    ['wrangler', 'deploy', '--dry-run', '--outdir', dir, '--config', 'wrangler.jsonc'],
    {
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: '1' },
    },
  )
  mf = new Miniflare({
    modules: true,
    scriptPath: join(dir, 'worker.js'),
    modulesRoot: dir,
    compatibilityDate: '2025-09-01',
    compatibilityFlags: ['nodejs_compat'],
    durableObjects: { RATE_LIMITER: 'RateLimiterDurableObject', EVENTS: 'EventsHubDurableObject' },
    r2Buckets: ['MODELS'],
    bindings: {
      PGPT_API_KEY: KEY,
      PGPT_LOG_LEVEL: 'silent',
      PGPT_RATE_LIMIT_RPM: '5',
      PGPT_INTERNAL_TOKEN: INTERNAL,
    },
  })
  await mf.ready
  const bucket = await mf.getR2Bucket('MODELS')
  await bucket.put(manifestKey('echo-1'), JSON.stringify(manifest('echo-1', null)))
  resolveReady(mf)
}, 120_000)

afterAll(async () => {
  await mf?.dispose()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const call = async (
  path: string,
  init: { headers?: Record<string, string>; method?: string; body?: string } = {},
) => {
  const res = await (await ready).dispatchFetch(`http://edge.test${path}`, init)
  return { status: res.status, headers: res.headers, text: await res.text() }
}

describe('the edge in workerd', () => {
  it('answers /health and /openapi.json', async () => {
    const health = await call('/health')
    expect(health.status).toBe(200)
    expect(JSON.parse(health.text)).toEqual({ status: 'ok' })
    expect(health.headers.get('x-request-id')).toMatch(/^req_/)
    const spec = JSON.parse((await call('/openapi.json')).text) as { openapi: string; paths: object }
    expect(spec.openapi).toBe('3.1.0')
    expect(spec.paths).toHaveProperty(['/v1/chat/completions'])
  })

  it('401 without a key; lists the R2-published models with the bootstrap key', async () => {
    const anon = await call('/v1/models')
    expect(anon.status).toBe(401)
    expect(JSON.parse(anon.text).error.type).toBe('authentication_error')
    const res = await call('/v1/models', { headers: { authorization: `Bearer ${KEY}` } })
    expect(res.status).toBe(200)
    expect(JSON.parse(res.text).data.map((m: { id: string }) => m.id)).toEqual(['echo-1'])
    expect(res.headers.get('x-ratelimit-limit-requests')).toBe('5')
  })

  it('keeps API keys and job records in R2 (the object-backed stores)', async () => {
    const created = await call('/v1/admin/keys', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'from-workerd', scopes: ['generate'] }),
    })
    expect(created.status).toBe(201)
    const { secret } = JSON.parse(created.text) as { secret: string }
    const bucket = await (await ready).getR2Bucket('MODELS')
    expect((await bucket.list({ prefix: 'keys/' })).objects.length).toBeGreaterThan(0)
    const auth = { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }
    const job = await call('/v1/jobs', {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ model: 'echo-1', input: { prompt: 'hello' } }),
    })
    expect(job.status).toBe(201)
    const { id } = JSON.parse(job.text) as { id: string }
    const got = await call(`/v1/jobs/${id}`, { headers: auth })
    expect(JSON.parse(got.text)).toMatchObject({ id, status: 'queued' })
    expect((await bucket.list({ prefix: 'jobs/' })).objects.length).toBeGreaterThan(0)
  })

  it('answers a synchronous chat completion when a worker posts its events to /internal/events', async () => {
    const created = await call('/v1/admin/keys', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'sync', scopes: ['generate'] }),
    })
    const auth = {
      authorization: `Bearer ${(JSON.parse(created.text) as { secret: string }).secret}`,
      'content-type': 'application/json',
    }
    const listIds = async () =>
      (
        JSON.parse((await call('/v1/jobs?limit=100', { headers: auth })).text) as { data: { id: string }[] }
      ).data.map((j) => j.id)
    const before = new Set(await listIds())
    // Repeatable (temperature 0): the same request again is a cache hit.
    const chat = { model: 'echo-1', messages: [{ role: 'user', content: 'hi' }], temperature: 0 }
    const pending = call('/v1/chat/completions', {
      method: 'POST',
      headers: auth,
      body: JSON.stringify(chat),
    })
    // Play the worker: find the new job, then publish its result through the internal route.
    let jobId: string | undefined
    for (let i = 0; i < 100 && !jobId; i++) {
      jobId = (await listIds()).find((id) => !before.has(id))
      if (!jobId) await new Promise((r) => setTimeout(r, 50))
    }
    expect(jobId).toBeDefined()
    const output = {
      model: 'echo-1',
      choices: [{ index: 0, text: 'hello from a worker', finishReason: 'stop', logprobs: null }],
      usage: { promptTokens: 3, completionTokens: 4 },
    }
    const posted = await call('/internal/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${INTERNAL}`, 'content-type': 'application/json' },
      body: JSON.stringify([
        { jobId, seq: 1, type: 'start', data: {}, at: Date.now() },
        { jobId, seq: 2, type: 'completed', data: output, at: Date.now() },
      ]),
    })
    expect(posted.status).toBe(200)
    const res = await pending
    expect(res.status).toBe(200)
    const body = JSON.parse(res.text) as {
      choices: { message: { content: string } }[]
      usage: { total_tokens: number }
    }
    expect(body.choices[0]!.message.content).toBe('hello from a worker')
    expect(body.usage.total_tokens).toBe(7)
    // The job's usage record is its worker's to write (workers/generation/usage.ts): the edge writes none.
    const bucket = await (await ready).getR2Bucket('MODELS')
    const usageKeys = async () => (await bucket.list({ prefix: 'usage/' })).objects.map((o) => o.key)
    // A cache hit's record is the edge's, written after the response, kept alive by the request's waitUntil.
    const hit = await call('/v1/chat/completions', {
      method: 'POST',
      headers: auth,
      body: JSON.stringify(chat),
    })
    expect(hit.status).toBe(200)
    expect(hit.text).toBe(res.text)
    let records: string[] = []
    for (let i = 0; i < 50 && records.length === 0; i++) {
      records = await usageKeys()
      if (records.length === 0) await new Promise((r) => setTimeout(r, 50))
    }
    expect(records.filter((k) => k.endsWith('~3~4~0~1'))).toHaveLength(1) // prompt~completion~trained~cached
    expect(records.filter((k) => k.endsWith('~0'))).toEqual([])
  })

  it('validates and rate-limits through the Durable Object', async () => {
    const bad = await call('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo-1', messages: [], temperature: 0 }),
    })
    expect(bad.status).toBe(400)
    expect(JSON.parse(bad.text).error.param).toBe('messages')
    const made = await call('/v1/admin/keys', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'limited', scopes: ['generate'], limits: { requests_per_minute: 3 } }),
    })
    const limitedKey = (JSON.parse(made.text) as { secret: string }).secret
    const statuses: number[] = []
    for (let i = 0; i < 5; i++)
      statuses.push((await call('/v1/models', { headers: { authorization: `Bearer ${limitedKey}` } })).status)
    // 3 per minute for this key (one back every 20 s): 3 pass, then 429s.
    expect(statuses).toEqual([200, 200, 200, 429, 429])
    const limited = await call('/v1/models', { headers: { authorization: `Bearer ${limitedKey}` } })
    expect(limited.status).toBe(429)
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
  })

  it('R2 conditional puts are atomic: create-once and compare-and-swap', async () => {
    const store = new R2ObjectStore((await (await ready).getR2Bucket('MODELS')) as unknown as R2BucketLike)
    const { etag } = await store.put('cas/x', 'one', { ifNoneMatch: '*' })
    await expect(store.put('cas/x', 'two', { ifNoneMatch: '*' })).rejects.toBeInstanceOf(
      PreconditionFailedError,
    )
    await expect(store.put('cas/x', 'two', { ifMatch: 'stale' })).rejects.toBeInstanceOf(
      PreconditionFailedError,
    )
    const next = await store.put('cas/x', 'two', { ifMatch: etag })
    expect(next.etag).not.toBe(etag)
    expect(new TextDecoder().decode((await store.get('cas/x'))!)).toBe('two')
    const race = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => store.put('cas/y', String(i), { ifNoneMatch: '*' })),
    )
    expect(race.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    expect((await store.list('cas/')).objects.map((o) => o.key)).toEqual(['cas/x', 'cas/y'])
  })

  it('the cron trigger (`scheduled`) sweeps expired files out of R2 and keeps the rest', async () => {
    const mf = await ready
    const store = new R2ObjectStore((await mf.getR2Bucket('MODELS')) as unknown as R2BucketLike)
    const file = (content: string, madeAt: number) =>
      createFile(
        store,
        'cron',
        { filename: 'in.jsonl', purpose: 'batch', content, expiresAfterS: 3600 },
        madeAt,
      )
    const expired = await file('old\n', Date.now() - 2 * 3600_000)
    const fresh = await file('new\n', Date.now())
    const run = await (await mf.getWorker()).scheduled({ cron: '17 * * * *' })
    expect(run.outcome).toBe('ok')
    expect(await store.head(fileContentKey('cron', expired.id))).toBeNull()
    expect(await store.head(fileMetaKey('cron', expired.id))).toBeNull()
    expect(await getFileObject(store, 'cron', fresh.id)).toEqual(fresh)
  })
})

testRateLimiter({
  name: 'durable-object (workerd)',
  make: async () => ({
    limiter: new DurableObjectRateLimiter(
      (await (await ready).getDurableObjectNamespace('RATE_LIMITER')) as unknown as RateLimiterNamespace,
    ),
  }),
})

let hub = 0
testEvents({
  name: 'durable-object (workerd)',
  make: async () => ({
    events: new DurableObjectEvents(
      (await (await ready).getDurableObjectNamespace('EVENTS')) as unknown as EventsNamespace,
      { prefix: `t${Date.now()}-${++hub}:` },
    ),
  }),
})

testResponseCache({
  name: 'workers-cache (workerd)',
  make: async () => ({
    cache: new WorkersCache((await (await ready).getCaches()).default as unknown as CacheLike, {
      Response: MiniflareResponse as unknown as typeof Response,
    }),
  }),
})
