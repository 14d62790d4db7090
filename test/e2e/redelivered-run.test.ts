/**
 * A redelivered job over real pieces (issue 20 item 11): the edge on
 * @hono/node-server (local profile), two worker processes publishing their
 * events to it over POST /internal/events, and a client following
 * GET /v1/jobs/{id}/stream. Worker A is frozen (SIGSTOP: a blocked event loop,
 * a GC or VM pause) mid-job until its lease lapses; worker B takes the job
 * over and runs it again (run 2). Then A wakes up and finishes its run 1:
 *
 * - the client, following since run 1, gets run 2's events (ids `2-<seq>`),
 *   not dropped as repeated seqs, and none of A's late run-1 events after them;
 * - A's result is refused by the run fence: the job's result is B's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { createLogger } from '../../core/logger.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'rerun-internal-token-0123456789'
let h: Harness
let edge: RunningEdge
let apiKey: string
const workers: WorkerChild[] = []

beforeAll(async () => {
  h = createHarness({ PGPT_VISIBILITY_TIMEOUT_S: '5', PGPT_WORKER_CONCURRENCY: '1' })
  const config = parseConfig({
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: {
      keys: new MemoryKeyStore(),
      usage: new MemoryUsageStore(),
      logger: createLogger({ service: 'edge', level: 'silent' }),
    },
  })
  apiKey = (await createKey(edge.deps.keys, { tenant: 'acme', name: 'e2e', scopes: ['generate'] })).secret
}, 60_000)

afterAll(async () => {
  for (const w of workers) {
    w.kill('SIGCONT')
    w.kill('SIGKILL')
    await w.exited
  }
  await edge?.close()
  await h?.cleanup()
})

/** Follows a job's SSE stream; `events` fills as they arrive, `done` resolves at its end. */
function follow(jobId: string) {
  const events: Array<{ id: string; type: string; data: unknown }> = []
  const done = (async () => {
    const res = await fetch(`${edge.url}/v1/jobs/${jobId}/stream`, {
      headers: { authorization: `Bearer ${apiKey}` },
    })
    expect(res.status).toBe(200)
    const decoder = new TextDecoder()
    let buf = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true })
      let end = buf.indexOf('\n\n')
      while (end >= 0) {
        const block = buf.slice(0, end)
        buf = buf.slice(end + 2)
        end = buf.indexOf('\n\n')
        const field = (name: string) => block.match(new RegExp(`^${name}: ?(.*)$`, 'm'))?.[1]
        const type = field('event')
        if (type) events.push({ id: field('id') ?? '', type, data: JSON.parse(field('data') ?? 'null') })
      }
    }
  })()
  return { events, done }
}

describe('a job redelivered after its worker lost the lease', () => {
  it('streams the second run and keeps its result; the first worker’s late writes are refused', async () => {
    const a = await h.startEdgeWorker('none', edge.url, TOKEN)
    workers.push(a)
    // Six 500 ms steps, each followed by a `progress` event; it ignores its abort signal, so a
    // worker that wakes up after losing the lease still finishes and tries to record its result.
    const job = await h.enqueue({
      tenant: 'acme',
      kind: 'test.sleep',
      input: { ms: 3000, steps: 6, ignoreAbort: true },
      requestId: 'req_rerun',
    })
    const stream = follow(job.id)
    // A is frozen just before its last step: on waking it finishes at once.
    await waitFor(
      () => stream.events.some((e) => e.type === 'progress' && (e.data as { step: number }).step === 5),
      20_000,
      'run 1 to reach step 5',
    )
    a.kill('SIGSTOP')
    const b = await h.startEdgeWorker('none', edge.url, TOKEN)
    workers.push(b)
    // B takes the job over once A's lease lapsed, and the client sees run 2 begin.
    await waitFor(() => stream.events.some((e) => e.id === '2-1'), 20_000, 'run 2 to start on the stream')
    expect(stream.events.find((e) => e.id === '2-1')).toMatchObject({ type: 'start', data: { attempt: 2 } })
    a.kill('SIGCONT')
    const done = await h.settled(job.id, 20_000)
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2 })
    expect((done.output as { pid: number }).pid).toBe(b.proc.pid)
    await a.waitForLog(
      (l) => l.msg === 'job taken over by another run; dropping this outcome' && l.jobId === job.id,
      20_000,
    )
    await stream.done
    // Run 1's events, then run 2's from its start to its end; nothing of run 1 after run 2 began.
    const ids = stream.events.map((e) => e.id)
    const run2 = ids.indexOf('2-1')
    expect(ids.slice(0, run2).every((id) => id.startsWith('1-'))).toBe(true)
    expect(ids.slice(run2)).toEqual(['2-1', '2-2', '2-3', '2-4', '2-5', '2-6', '2-7', '2-8', '2-9'])
    expect(stream.events.at(-1)).toMatchObject({ type: 'completed', data: { pid: b.proc.pid } })
    // A left B's message alone: B acked it, and nothing is left to redeliver.
    await waitFor(
      async () => {
        const st = await h.queues.queue.stats()
        return st.visible + st.inFlight + st.delayed === 0
      },
      5000,
      'the message to be acked',
    )
  }, 90_000)
})
