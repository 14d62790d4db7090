/**
 * A big job's usage is not lost (issue 20: a streamed chat with n=16,
 * top_logprobs=20 ended in a 504 with no [DONE] and /v1/usage did not move).
 * Its `completed` event carries every choice's tokens and top logprobs,
 * megabytes, above the public JSON limit PGPT_MAX_BODY_BYTES; the worker
 * process's HttpEvents POSTs it to the edge's /internal/events, which has its
 * own limit (PGPT_MAX_INTERNAL_BODY_BYTES). The edge on @hono/node-server, a
 * worker PROCESS running the real generation engine on a tiny model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTinyStack, type TinyStack } from '../helpers/tiny-stack.js'
import { waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'large-events-internal-token-0123'

let s: TinyStack

beforeAll(async () => {
  s = await startTinyStack({ token: TOKEN, modelId: 'big', maxPositions: 1024 })
}, 120_000)

afterAll(async () => {
  await s?.close()
})

describe('a job whose events are larger than PGPT_MAX_BODY_BYTES', () => {
  it('a streamed chat with n=16, top_logprobs=20 ends with [DONE] and /v1/usage counts its tokens', async () => {
    const before = await s.usageTotals()
    const res = await s.api('/v1/chat/completions', {
      method: 'POST',
      // Before the fix the stream hung until the edge's timeout: fail fast instead.
      signal: AbortSignal.timeout(45_000),
      body: JSON.stringify({
        model: 'big',
        messages: [{ role: 'user', content: 'Tell me sixteen stories.' }],
        n: 16,
        logprobs: true,
        top_logprobs: 20,
        max_tokens: 150,
        stream: true,
        stream_options: { include_usage: true },
      }),
    })
    expect(res.status).toBe(200)
    const body = await res.text()
    // The client got megabytes of tokens, more than the public JSON limit (1 MiB by default).
    expect(Buffer.byteLength(body)).toBeGreaterThan(s.edge.deps.config.PGPT_MAX_BODY_BYTES)
    const data = body
      .split('\n\n')
      .map((e) => e.replace(/^data: /, ''))
      .filter(Boolean)
    expect(data.at(-1)).toBe('[DONE]')
    const usage = (JSON.parse(data.at(-2)!) as { usage: { completion_tokens: number } }).usage
    expect(usage.completion_tokens).toBeGreaterThan(16)

    const after = await waitFor(
      async () => {
        const now = await s.usageTotals()
        return now.requests > before.requests ? now : null
      },
      10_000,
      'the usage record',
    )
    expect(after.output - before.output).toBe(usage.completion_tokens)
  }, 90_000)
})
