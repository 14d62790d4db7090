/**
 * A client that leaves stops its job (issue 19: "a client that leaves a stream
 * does not stop its job"). The edge on @hono/node-server (local profile) and a
 * worker PROCESS running the real generation engine on a tiny model with a
 * long context: greedy decoding never meets EOS there, so a request with a
 * large max_tokens runs for many seconds. A client that reads a couple of SSE
 * chunks and aborts (Node's fetch, AbortController) — or aborts a synchronous
 * request while it runs — gets its job canceled within a moment, the worker
 * stops generating, the canceled job keeps what was generated, and
 * GET /v1/usage counts exactly those tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobRecord } from '../../core/ports/job-store.js'
import { type CanceledGeneration, canceledGenerationSchema } from '../../core/protocol.js'
import { startTinyStack, type TinyStack } from '../helpers/tiny-stack.js'
import { waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'leaves-internal-token-0123456789'
/** Tokens the requests ask for: at the tiny model's few ms per token (more as the context grows), many seconds. */
const MAX_TOKENS = 4000
/** A job still running this long after its client left was not canceled. */
const CANCEL_WITHIN_MS = 8000

let s: TinyStack

beforeAll(async () => {
  s = await startTinyStack({ token: TOKEN, modelId: 'long', maxPositions: 4096 })
}, 120_000)

afterAll(async () => {
  await s?.close()
})

/** The job once it is terminal, or whatever it is after `ms` (a job that was not canceled is still running). */
async function endOf(jobId: string, ms: number): Promise<JobRecord> {
  const end = Date.now() + ms
  for (;;) {
    const job = (await s.h.jobs.getById(jobId))!
    if (['succeeded', 'failed', 'canceled'].includes(job.state) || Date.now() > end) return job
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** What the canceled job kept: what its worker had generated when it stopped. */
function partialOf(job: JobRecord): CanceledGeneration {
  expect(job.state).toBe('canceled')
  return canceledGenerationSchema.parse(job.output)
}

/** The job's usage, and GET /v1/usage counting one more request with exactly its tokens. */
async function expectMeteredExactly(
  before: Awaited<ReturnType<TinyStack['usageTotals']>>,
  partial: CanceledGeneration,
) {
  const after = await waitFor(
    async () => {
      const now = await s.usageTotals()
      return now.requests > before.requests ? now : null
    },
    10_000,
    'the usage record',
  )
  expect({
    requests: after.requests - before.requests,
    input: after.input - before.input,
    output: after.output - before.output,
  }).toEqual({ requests: 1, input: partial.usage.promptTokens, output: partial.usage.completionTokens })
}

describe('a client that leaves', () => {
  it('a stream read for two chunks, then aborted: the job is canceled and metered for what it generated', async () => {
    const before = await s.usageTotals()
    const ctrl = new AbortController()
    const res = await s.api('/v1/chat/completions', {
      method: 'POST',
      signal: ctrl.signal,
      body: JSON.stringify({
        model: 'long',
        messages: [{ role: 'user', content: 'Tell me a long story.' }],
        max_tokens: MAX_TOKENS,
        temperature: 0,
        stream: true,
      }),
    })
    expect(res.status).toBe(200)
    const jobId = res.headers.get('x-pgpt-job-id')!
    // Read until two chunks with text came (the role chunk carries none), then hang up.
    const reader = res.body!.getReader()
    const decoder = new TextDecoder()
    let buffered = ''
    let texts = 0
    while (texts < 2) {
      const { value, done } = await reader.read()
      expect(done).toBe(false)
      buffered += decoder.decode(value, { stream: true })
      const events = buffered.split('\n\n')
      buffered = events.pop()!
      for (const e of events) if (/"content":"[^"]/.test(e)) texts++
    }
    ctrl.abort()
    const leftAt = Date.now()

    const job = await endOf(jobId, CANCEL_WITHIN_MS)
    const partial = partialOf(job)
    // Stopped promptly: a few hundred ms of the cancel watch and a decode step, not max_tokens.
    expect(job.finishedAt! - leftAt).toBeLessThan(3000)
    expect(partial.usage.completionTokens).toBeGreaterThanOrEqual(2)
    // It did not run to its end (how far it got in that moment depends on the machine's speed).
    expect(partial.usage.completionTokens).toBeLessThan(MAX_TOKENS)
    expect(partial.usage.promptTokens).toBeGreaterThan(0)
    expect(partial.choices[0]!.finishReason).toBeNull()
    expect(partial.choices[0]!.text.length).toBeGreaterThan(0)
    await s.worker.waitForLog((l) => l.msg === 'job canceled' && l.jobId === jobId, 5000)
    await expectMeteredExactly(before, partial)
  }, 60_000)

  it('a synchronous request aborted while it runs: the job is canceled and metered for what it generated', async () => {
    const before = await s.usageTotals()
    const prompt = 'Once upon a time, synchronously,'
    const ctrl = new AbortController()
    const answered = s
      .api('/v1/completions', {
        method: 'POST',
        signal: ctrl.signal,
        body: JSON.stringify({ model: 'long', prompt, max_tokens: MAX_TOKENS, temperature: 0 }),
      })
      .catch((err: unknown) => err)
    // No response headers until it is done: find the job by its prompt, and hang up once it runs.
    const running = await waitFor(
      async () =>
        (await s.h.jobs.list('acme', { limit: 20 })).data.find(
          (j) => j.state === 'running' && (j.input as { prompt?: string }).prompt === prompt,
        ),
      30_000,
      'the job to run',
    )
    await new Promise((r) => setTimeout(r, 300))
    ctrl.abort()
    const leftAt = Date.now()
    expect(((await answered) as Error).name).toBe('AbortError')

    const job = await endOf(running.id, CANCEL_WITHIN_MS)
    const partial = partialOf(job)
    expect(job.finishedAt! - leftAt).toBeLessThan(3000)
    expect(partial.usage.completionTokens).toBeGreaterThan(0)
    // It did not run to its end: a quiet machine makes ~1,000 tokens in that moment, so only max_tokens bounds it.
    expect(partial.usage.completionTokens).toBeLessThan(MAX_TOKENS)
    expect(partial.choices[0]!.finishReason).toBeNull()
    await expectMeteredExactly(before, partial)
  }, 60_000)
})
