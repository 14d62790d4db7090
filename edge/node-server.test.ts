/**
 * Responses sent before the request body is read (an oversized body's 413, a
 * bad key's 401), over keep-alive connections, against a real edge started as
 * edge/node.ts starts it: every such request gets its 4xx and the requests
 * beside it (on the same pooled connections) get their own answers — no
 * socket errors. Bodies up to DRAIN_MAX_BYTES are read to their end and the
 * connection is kept; larger ones are answered with `Connection: close` and
 * the connection lingers until the client stops sending.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../core/config.js'
import { manifestKey } from '../core/model-manifest.js'
import { manifest } from '../test/helpers/edge-harness.js'
import { type RunningEdge, startEdge } from './node.js'
import { DRAIN_MAX_BYTES } from './node-server.js'

const ADMIN = 'pgpt_bootstrapkeyfortests0001'
const MiB = 1_048_576
/** Over the JSON limit (1 MiB) but drained: the connection stays open. */
const DRAINED = 2 * MiB
/** Over the drain cap: answered with `Connection: close`. */
const CLOSED = DRAIN_MAX_BYTES + MiB / 4
const ROUNDS = 8
const file = (bytes: number) =>
  new File([new Uint8Array(bytes).fill(120)], 'big.jsonl', { type: 'application/jsonl' })

let dir: string
let edge: RunningEdge

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgpt-early-'))
  const config = parseConfig({
    PGPT_DATA_DIR: dir,
    PGPT_LOG_LEVEL: 'silent',
    PGPT_API_KEY: ADMIN,
    PGPT_MAX_FILE_BYTES: String(MiB),
    PGPT_RATE_LIMIT_RPM: '100000',
    HOST: '127.0.0.1',
  })
  edge = await startEdge({ config, port: 0 })
  await edge.deps.store.put(manifestKey('echo-1'), JSON.stringify(manifest('echo-1', null)))
})

afterAll(async () => {
  await edge?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

type Outcome = { status: number; body: unknown; connection: string | null } | { error: string }

/** One request with Node's fetch (undici's pooled keep-alive connections); a socket error is an outcome. */
async function send(path: string, init: RequestInit): Promise<Outcome> {
  try {
    const res = await fetch(`${edge.url}${path}`, init)
    const text = await res.text()
    return {
      status: res.status,
      body: text ? JSON.parse(text) : null,
      connection: res.headers.get('connection'),
    }
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    return { error: `${cause?.code ?? ''} ${cause?.message ?? String(err)}` }
  }
}

const json = (body: string | Blob, key = ADMIN): RequestInit => ({
  method: 'POST',
  headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
  body,
})
const chat = (body: string | Blob, key?: string) => send('/v1/chat/completions', json(body, key))
const padded = (bytes: number) =>
  new Blob([JSON.stringify({ model: 'echo-1', messages: [], pad: 'x'.repeat(bytes) })])

function upload(file: File, key = ADMIN) {
  const form = new FormData()
  form.set('purpose', 'batch')
  form.set('file', file)
  return send('/v1/files', { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form })
}
const validUpload = () => {
  const line = JSON.stringify({
    custom_id: 'r1',
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'echo-1', messages: [{ role: 'user', content: 'hi' }] },
  })
  const form = new FormData()
  form.set('purpose', 'batch')
  form.set('file', new File([`${line}\n`], 'ok.jsonl', { type: 'application/jsonl' }))
  return send('/v1/files', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: form })
}

/** `rounds` times: the early-answered request and the small ones, all at once. */
async function rounds(early: () => Promise<Outcome>, small: Array<() => Promise<Outcome>>) {
  const earlyOutcomes: Outcome[] = []
  const smallOutcomes: Outcome[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const [e, ...s] = await Promise.all([early(), ...small.map((f) => f())])
    earlyOutcomes.push(e!)
    smallOutcomes.push(...s)
  }
  return { early: earlyOutcomes, small: smallOutcomes }
}

const errorShape = (status: number, code: string) => ({
  status,
  body: { error: { message: expect.any(String), type: expect.any(String), param: null, code } },
})
const errors = (outcomes: Outcome[]) => outcomes.filter((o) => 'error' in o)

describe('responses sent before the body is read, over keep-alive connections', () => {
  it('an oversized JSON body (drained) gets its 413, small requests beside it their 400', async () => {
    const body = padded(DRAINED)
    const { early, small } = await rounds(
      () => chat(body),
      [() => chat('{}'), () => chat('{}'), () => chat('{}')],
    )
    expect(errors([...early, ...small])).toEqual([])
    for (const o of early)
      expect(o).toMatchObject({ ...errorShape(413, 'payload_too_large'), connection: 'keep-alive' })
    for (const o of small)
      expect(o).toMatchObject({ status: 400, body: { error: { type: 'invalid_request_error' } } })
  })

  it('an oversized chunked JSON body (length unknown) gets its 413 and `Connection: close`', async () => {
    const part = new Uint8Array(64 * 1024).fill(32)
    const chunked = () =>
      send('/v1/chat/completions', {
        ...json(''),
        // a stream: no Content-Length, the body goes out chunked
        body: new ReadableStream({
          start(c) {
            for (let i = 0; i < 24; i++) c.enqueue(part)
            c.close()
          },
        }),
        duplex: 'half',
      } as RequestInit)
    const { early, small } = await rounds(chunked, [() => chat('{}'), () => chat('{}'), () => chat('{}')])
    expect(errors([...early, ...small])).toEqual([])
    for (const o of early)
      expect(o).toMatchObject({ ...errorShape(413, 'payload_too_large'), connection: 'close' })
    for (const o of small) expect(o).toMatchObject({ status: 400 })
  })

  it('an oversized upload gets its 413 — kept below the drain cap, closed above it', async () => {
    const smallOnes = [validUpload, () => chat('{}'), () => chat('{}')]
    for (const [bytes, connection] of [
      [DRAINED, 'keep-alive'],
      [CLOSED, 'close'],
    ] as const) {
      const big = file(bytes)
      const { early, small } = await rounds(() => upload(big), smallOnes)
      expect(errors([...early, ...small])).toEqual([])
      for (const o of early) expect(o).toMatchObject({ ...errorShape(413, 'payload_too_large'), connection })
      for (const o of small) expect([200, 400]).toContain((o as { status: number }).status)
      expect(small.filter((o) => (o as { status: number }).status === 200)).toHaveLength(ROUNDS)
    }
  })

  it('a bad key with a large body gets its 401, with no harm to the requests beside it', async () => {
    const bad = 'pgpt_notarealkeynotarealkey'
    const underLimit = padded(MiB - 4096) // under the JSON limit: the key is checked first
    const big = file(CLOSED)
    for (const [early, connection] of [
      [() => chat(underLimit, bad), 'keep-alive'],
      [() => upload(big, bad), 'close'],
    ] as const) {
      const out = await rounds(early, [() => chat('{}'), () => chat('{}'), validUpload])
      expect(errors([...out.early, ...out.small])).toEqual([])
      for (const o of out.early)
        expect(o).toMatchObject({ ...errorShape(401, 'invalid_api_key'), connection })
      expect(out.small.filter((o) => (o as { status: number }).status === 200)).toHaveLength(ROUNDS)
    }
  })

  it("node:http's client, which keeps sending the body after the answer, gets it: the drained connection is reused, the closed one lingers", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const post = (path: string, body: Buffer, headers: http.OutgoingHttpHeaders = {}) =>
      new Promise<{ status: number; connection: string | undefined; reused: boolean }>((resolve, reject) => {
        const req = http.request(`${edge.url}${path}`, {
          method: 'POST',
          agent,
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...headers },
        })
        req.on('error', reject)
        const sent = new Promise<void>((done) => req.on('finish', done))
        req.on('response', (res) => {
          res.resume()
          // the outcome once the answer is read and the whole body went out (or the request failed)
          res.on('end', () =>
            sent.then(() =>
              resolve({
                status: res.statusCode!,
                connection: res.headers.connection,
                reused: req.reusedSocket,
              }),
            ),
          )
        })
        req.end(body)
      })
    try {
      const first = await post('/v1/chat/completions', Buffer.from('{}'))
      expect(first).toMatchObject({ status: 400, connection: 'keep-alive' })
      expect(await post('/v1/chat/completions', Buffer.alloc(DRAINED, 'x'))).toMatchObject({
        status: 413,
        connection: 'keep-alive',
      })
      // The same connection serves the next request: the body was read to its end.
      expect(await post('/v1/chat/completions', Buffer.from('{}'))).toMatchObject({
        status: 400,
        reused: true,
      })
      expect(
        await post('/v1/files', Buffer.alloc(CLOSED, 'x'), {
          'content-type': 'multipart/form-data; boundary=b',
        }),
      ).toMatchObject({ status: 413, connection: 'close' })
      expect(await post('/v1/chat/completions', Buffer.from('{}'))).toMatchObject({
        status: 400,
        reused: false,
      })
    } finally {
      agent.destroy()
    }
  })
})
