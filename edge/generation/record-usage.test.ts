/**
 * When the response waits for the usage record the edge writes, that of a
 * cache hit (edge/generation/run.ts recordUsage; a job's record is its
 * worker's, written before the job ends, workers/generation/usage.ts): not on
 * Node or Workers (the record commits after the response, kept alive by
 * waitUntil where the runtime needs it), before the response on Lambda
 * (`usageBeforeResponse`); a failed write never fails the request and is
 * logged.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createLogger } from '../../core/logger.js'
import type { UsageRecord, UsageStore } from '../../core/ports/usage-store.js'
import { makeTestEdge, type TestEdge } from '../../test/helpers/edge-harness.js'
import type { EdgeDeps } from '../deps.js'

/**
 * A usage store whose writes, while `hold` is set, finish only when the test
 * lets them (and then fail if `fail` is set); otherwise they are written at once.
 */
function heldStore() {
  const written: UsageRecord[] = []
  const held: Array<() => void> = []
  const u = {
    hold: false,
    fail: false,
    written,
    held,
    store: {
      name: 'held',
      record: (rec) =>
        new Promise<void>((resolve, reject) => {
          const go = () => {
            if (u.fail) return reject(new Error('disk full'))
            written.push(rec)
            resolve()
          }
          if (u.hold) held.push(go)
          else go()
        }),
      query: async () => [],
    } as UsageStore,
    release: () => {
      for (const go of held.splice(0)) go()
    },
  }
  return u
}

const CHAT = {
  model: 'echo-1',
  messages: [{ role: 'user', content: 'one two three' }],
  temperature: 0,
  max_tokens: 8,
}

let t: TestEdge | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})

async function edge(deps: Partial<EdgeDeps>) {
  t = await makeTestEdge({ deps })
  const edgeT = t
  return (body: unknown = CHAT) =>
    edgeT.app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { ...edgeT.auth(edgeT.keys.generate), 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
}

/** Whether `p` settles within a few event-loop turns. */
async function settlesSoon(p: Promise<unknown>): Promise<boolean> {
  let done = false
  void p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < 20 && !done; i++) await new Promise((r) => setTimeout(r, 5))
  return done
}

describe('usage records and the response', () => {
  it('answers a cache hit without waiting for its usage commit, and the record is still written', async () => {
    const u = heldStore()
    const kept: Promise<unknown>[] = []
    const post = await edge({ usage: u.store, waitUntil: (_c, p) => kept.push(p) })
    const miss = await post()
    expect(miss.headers.get('x-cache')).toBe('MISS')
    // The job's record is its worker's, written before the job ended: the edge wrote none for it.
    const jobId = miss.headers.get('x-pgpt-job-id')
    expect(u.written).toHaveLength(1)
    expect(u.written[0]).toMatchObject({ id: `usage_${jobId}`, cached: false, kind: 'chat.completion' })
    expect(kept).toHaveLength(0)
    u.hold = true
    const hit = await post()
    expect(hit.headers.get('x-cache')).toBe('HIT')
    const body = (await hit.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }
    expect(u.written).toHaveLength(1) // answered while its record was still being written
    expect(u.held).toHaveLength(1)
    expect(kept).toHaveLength(1) // Workers: the write is handed to waitUntil
    u.release()
    await Promise.all(kept)
    expect(u.written.map((r) => r.cached)).toEqual([false, true])
    expect(u.written[1]).toMatchObject({
      promptTokens: body.usage.prompt_tokens,
      completionTokens: body.usage.completion_tokens,
      kind: 'chat.completion',
      model: 'echo-1',
    })
    expect(u.written[1]!.requestId).toBe(hit.headers.get('x-request-id'))
    expect(u.written[1]!.id).toBeUndefined() // written once: no idempotency key
  })

  it('on Lambda (usageBeforeResponse) answers a cache hit only once its record is written', async () => {
    const u = heldStore()
    const post = await edge({ usage: u.store, usageBeforeResponse: true })
    expect((await post()).headers.get('x-cache')).toBe('MISS')
    u.hold = true
    const hit = Promise.resolve(post())
    await until(() => u.held.length === 1)
    expect(await settlesSoon(hit)).toBe(false)
    u.release()
    expect((await hit).status).toBe(200)
    expect(u.written.map((r) => r.cached)).toEqual([false, true])
  })

  it('a failed usage write does not fail the request and is logged', async () => {
    const u = heldStore()
    const lines: string[] = []
    const logger = createLogger({ service: 'edge', destination: { write: (l: string) => lines.push(l) } })
    for (const before of [false, true]) {
      Object.assign(u, { hold: false, fail: false })
      const post = await edge({ usage: u.store, logger, usageBeforeResponse: before })
      expect((await post()).status).toBe(200)
      Object.assign(u, { hold: true, fail: true })
      const res = post()
      await until(() => u.held.length === 1)
      u.release()
      const hit = await res
      expect(hit.status).toBe(200)
      expect(hit.headers.get('x-cache')).toBe('HIT')
      await until(() => lines.filter((l) => l.includes('usage record failed')).length === (before ? 2 : 1))
      await t?.close()
    }
    const line = JSON.parse(lines.find((l) => l.includes('usage record failed'))!)
    expect(line.err.message).toBe('disk full')
  })
})

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}
