import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import type { JobEvent } from '../ports/events.js'
import { HttpEvents } from './http-events.js'

const TOKEN = 'internal-token-0123456789'

interface Edge {
  url: string
  requests: Array<{ auth: string | undefined; events: JobEvent[] }>
  /** Status for the n-th request; default 200 with a valid token. */
  status: (n: number) => number
  close(): Promise<void>
}

/** A stand-in for the edge's POST /internal/events: checks the bearer and records events. */
async function startEdge(): Promise<Edge> {
  const edge: Edge = { url: '', requests: [], status: () => 200, close: async () => {} }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const n = edge.requests.length
      const auth = req.headers.authorization
      edge.requests.push({ auth, events: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
      if (req.url !== '/internal/events' || req.method !== 'POST') res.statusCode = 404
      else if (auth !== `Bearer ${TOKEN}`) res.statusCode = 401
      else res.statusCode = edge.status(n)
      res.end(JSON.stringify({ accepted: 0 }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  edge.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  edge.close = () => new Promise((r) => server.close(() => r()))
  return edge
}

const ev = (seq: number, type: JobEvent['type'] = 'token'): JobEvent => ({
  jobId: 'job_1',
  run: 1,
  seq,
  type,
  data: { seq },
  at: 1,
})

async function waitForErrors(list: unknown[]) {
  for (let i = 0; i < 100 && list.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
}

describe('HttpEvents', () => {
  let edge: Edge
  afterEach(async () => edge?.close())

  it('batches events published within the window into one authorized POST, in order', async () => {
    edge = await startEdge()
    const events = new HttpEvents({ edgeUrl: edge.url, token: TOKEN, batchWindowMs: 20, awaitAll: true })
    await Promise.all([1, 2, 3, 4].map((s) => events.publish(ev(s))))
    await events.publish(ev(5, 'completed'))
    expect(edge.requests).toHaveLength(2)
    expect(edge.requests[0].auth).toBe(`Bearer ${TOKEN}`)
    expect(edge.requests[0].events.map((e) => e.seq)).toEqual([1, 2, 3, 4])
    expect(edge.requests[1].events.map((e) => e.type)).toEqual(['completed'])
  })

  it('splits at maxBatch', async () => {
    edge = await startEdge()
    const events = new HttpEvents({
      edgeUrl: `${edge.url}/`,
      token: TOKEN,
      maxBatch: 2,
      batchWindowMs: 50,
      awaitAll: true,
    })
    await Promise.all([1, 2, 3, 4, 5].map((s) => events.publish(ev(s))))
    expect(edge.requests.map((r) => r.events.map((e) => e.seq))).toEqual([[1, 2], [3, 4], [5]])
  })

  it('retries 5xx and 429, then succeeds', async () => {
    edge = await startEdge()
    edge.status = (n) => [503, 429, 200][n] ?? 200
    const events = new HttpEvents({ edgeUrl: edge.url, token: TOKEN, retryBaseMs: 5 })
    await events.publish(ev(1, 'completed'))
    expect(edge.requests).toHaveLength(3)
    expect(edge.requests.every((r) => r.events[0].seq === 1)).toBe(true)
  })

  it('an edge with a lower body limit (413) gets the batch in halves; one event it refuses fails', async () => {
    edge = await startEdge()
    edge.status = (n) => (edge.requests[n].events.length > 2 ? 413 : 200)
    const events = new HttpEvents({ edgeUrl: edge.url, token: TOKEN, batchWindowMs: 20, awaitAll: true })
    await Promise.all([1, 2, 3, 4, 5].map((s) => events.publish(ev(s))))
    const accepted = edge.requests.filter((r) => r.events.length <= 2).map((r) => r.events.map((e) => e.seq))
    expect(accepted).toEqual([[1, 2], [3], [4, 5]])
    edge.status = () => 413
    await expect(events.publish(ev(6, 'completed'))).rejects.toThrow(/PGPT_MAX_INTERNAL_BODY_BYTES/)
  })

  it('fails at once on a wrong token (no retry) and after the retries on a dead edge', async () => {
    edge = await startEdge()
    const wrong = new HttpEvents({ edgeUrl: edge.url, token: 'not-the-right-token-xx', retryBaseMs: 5 })
    await expect(wrong.publish(ev(1, 'failed'))).rejects.toThrow(/answered 401/)
    expect(edge.requests).toHaveLength(1)
    const url = edge.url
    await edge.close()
    const dead = new HttpEvents({ edgeUrl: url, token: TOKEN, retries: 2, retryBaseMs: 5 })
    await expect(dead.publish(ev(1, 'canceled'))).rejects.toThrow(/failed/)
  })

  it('token events do not wait for the network; a terminal event waits for everything before it', async () => {
    edge = await startEdge()
    edge.status = (n) => (n === 0 ? 503 : 200) // the first batch needs a retry
    const errors: unknown[] = []
    const events = new HttpEvents({
      edgeUrl: edge.url,
      token: TOKEN,
      retryBaseMs: 100,
      onError: (e) => errors.push(e),
    })
    const t0 = Date.now()
    await events.publish(ev(1))
    await events.publish(ev(2))
    expect(Date.now() - t0).toBeLessThan(20)
    expect(edge.requests).toHaveLength(0)
    await events.publish(ev(3, 'completed'))
    const delivered = edge.requests.filter((_, i) => i > 0).flatMap((r) => r.events.map((e) => e.seq))
    expect(delivered).toEqual([1, 2, 3])
    expect(errors).toEqual([])
  })

  it('reports failures of events it did not wait for to onError', async () => {
    edge = await startEdge()
    const errors: Array<{ err: unknown; seqs: number[] }> = []
    const events = new HttpEvents({
      edgeUrl: edge.url,
      token: 'wrong-token-0123456789',
      onError: (err, evs) => errors.push({ err, seqs: evs.map((e) => e.seq) }),
    })
    await events.publish(ev(1))
    await events.flush()
    await waitForErrors(errors)
    expect(errors[0].seqs).toEqual([1])
    expect(String(errors[0].err)).toMatch(/401/)
  })

  it('refuses to subscribe, and bad options', () => {
    expect(() => new HttpEvents({ edgeUrl: 'http://edge', token: 'short' })).toThrow(/at least 16/)
    expect(() => new HttpEvents({ edgeUrl: 'nope', token: TOKEN })).toThrow(/not a URL/)
    const events = new HttpEvents({ edgeUrl: 'http://edge:1', token: TOKEN })
    expect(() => events.subscribe()).toThrow(/subscribe is not supported/)
  })
})
