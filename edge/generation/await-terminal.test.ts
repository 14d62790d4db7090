/**
 * A synchronous request is answered from the shared job record when the
 * worker's events never reach this edge instance's hub (on Lambda each
 * container has its own), and still from the events when they do.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryEvents } from '../../core/adapters/memory-events.js'
import { startEchoWorker } from '../../test/helpers/echo-worker.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'

let edge: TestEdge | undefined
let stopWorker: (() => Promise<void>) | undefined
afterEach(async () => {
  await stopWorker?.()
  await edge?.close()
})

const completion = (e: TestEdge, secret: string, prompt: string) =>
  e.app.request('/v1/completions', {
    method: 'POST',
    headers: { ...e.auth(secret), 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo-1', prompt, max_tokens: 8 }),
  })

describe('synchronous requests and the job record', () => {
  it('answers from the record when the worker publishes to another hub', async () => {
    edge = await makeTestEdge({ worker: false })
    // The worker shares the queue and the job store, not the events hub.
    const otherHub = new MemoryEvents()
    const worker = startEchoWorker({ queue: edge.deps.queue, jobs: edge.deps.jobs, events: otherHub })
    stopWorker = () => worker.stop()
    const started = Date.now()
    const res = await completion(edge, edge.keys.generate, 'one two three')
    expect(res.status).toBe(200)
    const body = (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } }
    expect(body.choices[0].text).toBe('three two one')
    expect(body.usage.completion_tokens).toBe(3)
    expect(Date.now() - started).toBeLessThan(5_000) // the poll, not the 10 s timeout
    expect(worker.handled).toBe(1)
  })

  it('answers a failed job from the record with its reason', async () => {
    edge = await makeTestEdge({ worker: false })
    const res = completion(edge, edge.keys.generate, 'never runs')
    // No worker: fail the queued job directly in the store, as a dead-letter drain would.
    for (let i = 0; i < 50; i++) {
      const { data } = await edge.deps.jobs.list('t1')
      if (data[0]) {
        await edge.deps.jobs.transition(data[0].id, 'failed', {
          error: { message: 'The worker gave up on this job.', code: 'dead_lettered' },
        })
        break
      }
      await new Promise((r) => setTimeout(r, 20))
    }
    const r = await res
    expect(r.status).toBe(500)
    const body = (await r.json()) as { error: { message: string; code: string } }
    expect(body.error).toMatchObject({ message: 'The worker gave up on this job.', code: 'dead_lettered' })
  })

  it('still answers from the events when they arrive (the common case)', async () => {
    edge = await makeTestEdge()
    const res = await completion(edge, edge.keys.generate, 'alpha beta')
    expect(res.status).toBe(200)
    expect(((await res.json()) as { choices: { text: string }[] }).choices[0].text).toBe('beta alpha')
  })
})
