/**
 * Worker → edge events over real HTTP: a worker process's HttpEvents POSTs to
 * a served edge's /internal/events. Big jobs (n=16 with top_logprobs) make
 * event batches, and a `completed` event alone, larger than the public JSON
 * limit PGPT_MAX_BODY_BYTES; the internal route has its own limit
 * (PGPT_MAX_INTERNAL_BODY_BYTES) and HttpEvents splits its POSTs under it.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { HttpEvents } from '../core/adapters/http-events.js'
import type { JobEvent } from '../core/ports/events.js'
import { INTERNAL_TOKEN, makeTestEdge, type TestEdge } from '../test/helpers/edge-harness.js'
import { serveEdge } from './node-server.js'

let t: TestEdge | undefined
let server: Server | undefined
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = undefined
  await t?.close()
  t = undefined
})

async function served(env: Record<string, string>): Promise<string> {
  t = await makeTestEdge({ worker: false, env })
  const app = t.app
  const info = await new Promise<AddressInfo>((resolve) => {
    server = serveEdge({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, resolve)
  })
  return `http://127.0.0.1:${info.port}`
}

const token = (jobId: string, seq: number, bytes: number, run = 1): JobEvent => ({
  jobId,
  run,
  seq,
  type: 'token',
  data: { index: seq % 16, text: 'x'.repeat(bytes) },
  at: 1,
})

async function received(jobId: string, last: number, run = 1): Promise<JobEvent[]> {
  const seen: JobEvent[] = []
  const ac = new AbortController()
  for await (const e of (t as TestEdge).deps.events.subscribe(jobId, { signal: ac.signal })) {
    seen.push(e)
    if (e.run >= run && e.seq >= last) ac.abort()
  }
  return seen
}

describe('worker → edge events (/internal/events)', () => {
  it('delivers a batch larger than PGPT_MAX_BODY_BYTES, and a completed event that alone is larger', async () => {
    const url = await served({ PGPT_MAX_BODY_BYTES: String(64 * 1024) })
    const events = new HttpEvents({ edgeUrl: url, token: INTERNAL_TOKEN, batchWindowMs: 20, retryBaseMs: 5 })
    // 100 × 4 KiB tokens in one batch window (~400 KiB), then a 200 KiB `completed`.
    for (let s = 1; s <= 100; s++) await events.publish(token('job_big', s, 4096))
    const output = { choices: [{ index: 0, text: 'y'.repeat(200 * 1024) }] }
    await events.publish({ jobId: 'job_big', run: 1, seq: 101, type: 'completed', data: output, at: 1 })
    const seen = await received('job_big', 101)
    expect(seen.map((e) => e.seq)).toEqual(Array.from({ length: 101 }, (_, i) => i + 1))
    expect(seen.at(-1)?.data).toEqual(output)
  })

  it('a terminal event alone over the internal limit goes without its data; the edge takes it from the record', async () => {
    const limit = 64 * 1024
    const url = await served({ PGPT_MAX_INTERNAL_BODY_BYTES: String(limit) })
    const jobs = (t as TestEdge).deps.jobs
    const job = await jobs.create({ tenant: 't1', kind: 'generation', input: {} })
    await jobs.transition(job.id, 'running')
    const output = { choices: [{ index: 0, text: 'z'.repeat(2 * limit) }] }
    await jobs.transition(job.id, 'succeeded', { output })
    const events = new HttpEvents({
      edgeUrl: url,
      token: INTERNAL_TOKEN,
      maxBodyBytes: limit,
      retryBaseMs: 5,
    })
    await events.publish(token(job.id, 1, 100))
    await events.publish({ jobId: job.id, run: 1, seq: 2, type: 'completed', data: output, at: 1 })
    const seen = await received(job.id, 2)
    expect(seen.map((e) => [e.seq, e.type])).toEqual([
      [1, 'token'],
      [2, 'completed'],
    ])
    expect(seen[1].data).toEqual(output)
    // An edge set lower than the worker (a 413 for that one event): the same.
    const job2 = await jobs.create({ tenant: 't1', kind: 'generation', input: {} })
    await jobs.transition(job2.id, 'running')
    await jobs.transition(job2.id, 'succeeded', { output })
    const unaware = new HttpEvents({ edgeUrl: url, token: INTERNAL_TOKEN, retryBaseMs: 5 })
    await unaware.publish({ jobId: job2.id, run: 1, seq: 1, type: 'completed', data: output, at: 1 })
    expect((await received(job2.id, 1))[0].data).toEqual(output)
  })

  it('carries each event’s run: a redelivered job’s second run gets through, the first run’s late events do not', async () => {
    const url = await served({})
    const worker1 = new HttpEvents({ edgeUrl: url, token: INTERNAL_TOKEN, awaitAll: true, retryBaseMs: 5 })
    const worker2 = new HttpEvents({ edgeUrl: url, token: INTERNAL_TOKEN, awaitAll: true, retryBaseMs: 5 })
    const following = received('job_runs', 3, 2)
    await worker1.publish(token('job_runs', 1, 1, 1))
    await worker1.publish(token('job_runs', 2, 1, 1))
    // Worker 1 lost its lease; worker 2 runs the job again from seq 1, worker 1 is still going.
    await worker2.publish(token('job_runs', 1, 1, 2))
    await worker1.publish(token('job_runs', 3, 1, 1))
    await worker2.publish(token('job_runs', 2, 1, 2))
    await worker2.publish({ jobId: 'job_runs', run: 2, seq: 3, type: 'completed', data: {}, at: 1 })
    expect((await following).map((e) => `${e.run}:${e.seq}`)).toEqual(['1:1', '1:2', '2:1', '2:2', '2:3'])
    expect((await received('job_runs', 3, 2)).map((e) => `${e.run}:${e.seq}`)).toEqual(['2:1', '2:2', '2:3'])

    const post = (body: unknown) =>
      fetch(`${url}/internal/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${INTERNAL_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    // A worker from before runs sends none: its events are run 1's.
    expect((await post([{ jobId: 'job_old', seq: 1, type: 'completed', data: {}, at: 1 }])).status).toBe(200)
    expect((await received('job_old', 1)).map((e) => e.run)).toEqual([1])
    for (const run of [-1, 1.5, '2'])
      expect((await post([{ ...token('job_bad', 1, 1), run }])).status, String(run)).toBe(400)
  })

  it('splits POSTs under the internal limit; a body over it is a 413', async () => {
    const limit = 128 * 1024
    const url = await served({ PGPT_MAX_BODY_BYTES: '4096', PGPT_MAX_INTERNAL_BODY_BYTES: String(limit) })
    const bodies: number[] = []
    const events = new HttpEvents({
      edgeUrl: url,
      token: INTERNAL_TOKEN,
      batchWindowMs: 20,
      maxBodyBytes: limit,
      fetch: (input, init) => {
        bodies.push(Buffer.byteLength(String(init?.body)))
        return fetch(input, init)
      },
    })
    for (let s = 1; s <= 99; s++) await events.publish(token('job_split', s, 8192))
    await events.publish({ jobId: 'job_split', run: 1, seq: 100, type: 'completed', data: {}, at: 1 })
    expect((await received('job_split', 100)).map((e) => e.seq)).toEqual(
      Array.from({ length: 100 }, (_, i) => i + 1),
    )
    expect(bodies.length).toBeGreaterThan(1)
    for (const b of bodies) expect(b).toBeLessThanOrEqual(limit)

    const tooBig = await fetch(`${url}/internal/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${INTERNAL_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify([token('job_x', 1, limit)]),
    })
    expect(tooBig.status).toBe(413)
    expect(((await tooBig.json()) as { error: { message: string } }).error.message).toContain(String(limit))
  })
})
