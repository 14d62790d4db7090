/**
 * One handler behind /v1/completions and /v1/chat/completions: response
 * cache (repeatable requests only), tokens-per-minute, job submission, then
 * either waiting for the result or relaying token events as SSE. A client
 * that leaves (a stream, or a request still waiting) gets its job canceled:
 * nobody will read the rest, so the worker stops instead of generating to
 * max_tokens for nobody (as vLLM and TGI abort). The worker meters what the
 * job generated (workers/generation/usage.ts); the edge follows the job to its
 * terminal event, whose data says so, to refund the unused token budget, and
 * records only cache hits (no job ran).
 */
import { streamSSE } from 'hono/streaming'
import { ApiError, toApiError } from '../../core/errors.js'
import { chatBody, chunker, completionBody } from '../../core/openai/format.js'
import {
  type GenerationRequest,
  type Prepared,
  prepareGeneration,
} from '../../core/openai/generation-request.js'
import type { JobEvent } from '../../core/ports/events.js'
import { type TokenEventData, tokenEventDataSchema } from '../../core/protocol.js'
import type { AppContext, EdgeDeps } from '../deps.js'
import { canonicalHash } from '../lib/canonical.js'
import type { TokenLimiter } from '../middleware/rate-limit/index.js'
import {
  awaitTerminal,
  canceledUsage,
  cancelJob,
  isRepeatable,
  keepAlive,
  outputOf,
  recordUsage,
  refundUnused,
  type Submitted,
  submitGeneration,
  usageKind,
} from './run.js'
import { RERUN_DIVERGED, TokenRelay } from './token-relay.js'

export const DEFAULT_SYNC_TIMEOUT_MS = 300_000

export function wantsCacheBypass(c: AppContext): boolean {
  const cc = c.req.header('cache-control')?.toLowerCase() ?? ''
  return /\bno-(cache|store)\b/.test(cc) || c.req.header('x-pgpt-cache')?.toLowerCase() === 'bypass'
}

const USAGE_KEY = '"usage":{"prompt_tokens":'
const USAGE_RE = /^(\d+),"completion_tokens":(\d+)/

/**
 * The usage in a cached body, read from its `usage` key (which no string in
 * the body can contain: their quotes are escaped) instead of parsing the
 * whole body on every hit; any other shape is parsed.
 */
export function cachedUsage(body: string): { prompt_tokens: number; completion_tokens: number } | undefined {
  const at = body.lastIndexOf(USAGE_KEY)
  const m = at < 0 ? null : USAGE_RE.exec(body.slice(at + USAGE_KEY.length, at + USAGE_KEY.length + 64))
  if (m) return { prompt_tokens: Number(m[1]), completion_tokens: Number(m[2]) }
  return (JSON.parse(body) as { usage?: { prompt_tokens: number; completion_tokens: number } }).usage
}

export async function handleGeneration(
  c: AppContext,
  deps: EdgeDeps,
  tokens: TokenLimiter,
  r: GenerationRequest,
  includeUsage: boolean,
): Promise<Response> {
  const key = c.get('key')
  // Labelled with the model's id once it is found (metrics, log line): the request's own
  // string would make every unknown or oversized name a label kept for ever.
  c.set('model', 'unknown')
  const prep = await prepareGeneration(deps.models, key.tenant, r)
  c.set('model', prep.manifest.id)

  let cacheKey: string | undefined
  if (!r.stream) {
    const ttl = deps.config.PGPT_CACHE_TTL_S
    if (ttl > 0 && isRepeatable(prep.input.sampling) && !wantsCacheBypass(c)) {
      cacheKey = await canonicalHash({
        v: 1,
        tenant: key.tenant,
        model: prep.manifest.id,
        modelCreated: prep.manifest.created,
        input: prep.input,
      })
      const hit = await deps.cache.get(cacheKey).catch((err) => {
        c.get('log').warn({ err }, 'response cache get failed')
        return null
      })
      if (hit) {
        deps.metrics.cacheLookups.inc({ result: 'hit' })
        const u = cachedUsage(hit.body)
        await recordUsage(c, deps, {
          model: prep.manifest.id,
          kind: usageKind(r),
          promptTokens: u?.prompt_tokens ?? prep.promptTokens,
          completionTokens: u?.completion_tokens ?? 0,
          cached: true,
        })
        c.header('x-cache', 'HIT')
        c.header('openai-processing-ms', String(Math.round(performance.now() - c.get('startedAt'))))
        return c.body(hit.body, hit.status as 200, hit.headers)
      }
      deps.metrics.cacheLookups.inc({ result: 'miss' })
      c.header('x-cache', 'MISS')
    } else {
      deps.metrics.cacheLookups.inc({ result: 'bypass' })
      c.header('x-cache', 'BYPASS')
    }
  }

  const refund = await tokens.take(c, prep.tokenBudget)
  const submitted = await submitGeneration(c, deps, prep.input)
  c.header('x-pgpt-job-id', submitted.job.id)
  const timeoutMs = deps.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS
  if (r.stream) return streamGeneration(c, deps, submitted, prep, r, includeUsage, refund, timeoutMs)

  const meter = refundUnused(refund)
  // The client hung up while waiting (@hono/node-server aborts the request's signal then): nobody
  // gets the answer. Runtimes without a request signal, or that never abort it, follow the job to its end.
  const clientLeft: AbortSignal | undefined = c.req.raw.signal
  const onLeave = () => leaveJob(c, deps, submitted.job.id)
  clientLeft?.addEventListener('abort', onLeave, { once: true })
  let output: ReturnType<typeof outputOf>
  let metered = false
  try {
    const end = await awaitTerminal(submitted, timeoutMs)
    // Canceled after it began generating (its client left, or the job API canceled it): its worker billed that.
    const partial = canceledUsage(end)
    if (partial) {
      metered = true
      await meter(partial)
    }
    output = outputOf(end, submitted.job.id)
  } catch (err) {
    if (!metered) await refund(prep.promptTokens).catch(() => {})
    throw err
  } finally {
    clientLeft?.removeEventListener('abort', onLeave)
  }
  await meter(output.usage)
  const body = JSON.stringify(
    r.endpoint === 'completions'
      ? completionBody(submitted.job.id, output)
      : chatBody(submitted.job.id, output),
  )
  if (cacheKey) {
    const value = { status: 200, headers: { 'content-type': 'application/json' }, body, storedAt: Date.now() }
    await deps.cache.put(cacheKey, value, deps.config.PGPT_CACHE_TTL_S).catch((err) => {
      c.get('log').warn({ err }, 'response cache put failed')
    })
  }
  c.header('openai-processing-ms', String(Math.round(performance.now() - c.get('startedAt'))))
  return c.body(body, 200, { 'content-type': 'application/json' })
}

function streamGeneration(
  c: AppContext,
  deps: EdgeDeps,
  sub: Submitted,
  prep: Prepared,
  r: GenerationRequest,
  includeUsage: boolean,
  refund: (used: number) => Promise<void>,
  timeoutMs: number,
): Response {
  c.set('streaming', true)
  const startedAt = c.get('startedAt')
  const route = c.req.routePath
  const log = c.get('log')
  const model = prep.manifest.id
  const chunks = chunker(r.endpoint, sub.job.id, model, includeUsage)
  c.header('x-cache', 'BYPASS')
  const meter = refundUnused(refund)
  return streamSSE(c, async (stream) => {
    let clientGone = false
    /** The job's terminal event came: nothing left to cancel. */
    let ended = false
    const leave = () => {
      if (clientGone) return
      clientGone = true
      if (!ended) leaveJob(c, deps, sub.job.id)
    }
    stream.onAbort(leave)
    const send = async (data: unknown) => {
      if (clientGone) return
      try {
        await stream.writeSSE({ data: typeof data === 'string' ? data : JSON.stringify(data) })
      } catch {
        leave()
      }
    }
    let status = '200'
    let metered = false
    // A job run again (its worker was lost) streams from its start: the relay skips what was sent.
    const tokens = new TokenRelay(sub.job.id)
    const relay = (async () => {
      const timer = setTimeout(sub.abort, timeoutMs)
      let firstToken = true
      try {
        if (r.endpoint === 'chat.completions')
          for (let i = 0; i < prep.input.sampling.n; i++) await send(chunks.role(i))
        for (;;) {
          const { value: e, done } = await sub.events.next()
          if (done)
            throw new ApiError(504, `The job ${sub.job.id} did not finish in time.`, { code: 'timeout' })
          if (e.type === 'token') {
            const t = tokenEventDataSchema.safeParse(e.data)
            if (!t.success) continue
            if (firstToken) {
              firstToken = false
              deps.metrics.timeToFirstToken.observe({ model }, (performance.now() - startedAt) / 1000)
            }
            const d: TokenEventData = t.data
            const text = tokens.next(e.run, d.index, d.text)
            if (text) await send(chunks.text(d.index, text, d.logprob))
          } else if (isTerminal(e)) {
            ended = true
            // Canceled after it began generating (its client left, or the job API canceled it): its worker billed that.
            const partial = canceledUsage(e)
            if (partial) {
              metered = true
              await meter(partial)
            }
            const out = outputOf(e, sub.job.id)
            const short = tokens.shortfall()
            if (short) {
              // The job did generate this: metered, though its stream cannot end well.
              metered = true
              await meter(out.usage)
              throw short
            }
            for (const ch of out.choices) await send(chunks.finish(ch.index, ch.finishReason))
            if (includeUsage) await send(chunks.usage(out.usage))
            await send('[DONE]')
            metered = true
            await meter(out.usage)
            return
          }
        }
      } catch (err) {
        const api = toApiError(err)
        // A rerun that diverged from what was streamed, still running: nobody will read the rest.
        if (api.code === RERUN_DIVERGED && !ended) leaveJob(c, deps, sub.job.id)
        // 499 (nginx's "client closed request"): the job's 409 `canceled` was the client's own doing.
        status = clientGone && api.code === 'job_canceled' ? '499' : String(api.status)
        if (api.status >= 500) log.error({ err }, 'stream failed')
        if (!metered) await refund(prep.promptTokens).catch(() => {})
        await send(api.toJSON())
      } finally {
        clearTimeout(timer)
        sub.abort()
        deps.metrics.requestLatency.observe(
          { route, method: 'POST', status },
          (performance.now() - startedAt) / 1000,
        )
        if (clientGone) log.info({ jobId: sub.job.id }, 'client left the stream; its job was canceled')
      }
    })()
    keepAlive(c, deps, relay)
    await relay
  })
}

/**
 * The client of a job left before its end: cancel the job (POST
 * /v1/jobs/{id}/cancel's mechanism). A failure is only logged: the job then
 * runs to its end and is metered as it is.
 */
function leaveJob(c: AppContext, deps: EdgeDeps, jobId: string): void {
  const log = c.get('log')
  const canceling = cancelJob(deps, c.get('key').tenant, jobId).then(
    () => log.info({ jobId }, 'the client left; its job is canceled'),
    (err: unknown) => log.warn({ err, jobId }, 'the client left; its job could not be canceled'),
  )
  keepAlive(c, deps, canceling)
}

const isTerminal = (e: JobEvent) => e.type === 'completed' || e.type === 'failed' || e.type === 'canceled'
