/**
 * One handler behind /v1/completions and /v1/chat/completions: response
 * cache (repeatable requests only), tokens-per-minute, job submission, then
 * either waiting for the result or relaying token events as SSE. The relay
 * follows the job to its terminal event even when the client has left, so
 * usage is always recorded.
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
  isRepeatable,
  keepAlive,
  outputOf,
  recordUsage,
  type Submitted,
  submitGeneration,
} from './run.js'

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

const usageKind = (r: GenerationRequest) => (r.endpoint === 'completions' ? 'completion' : 'chat.completion')

export async function handleGeneration(
  c: AppContext,
  deps: EdgeDeps,
  tokens: TokenLimiter,
  r: GenerationRequest,
  includeUsage: boolean,
): Promise<Response> {
  const key = c.get('key')
  c.set('model', r.model)
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

  let output: ReturnType<typeof outputOf>
  try {
    output = outputOf(await awaitTerminal(submitted, timeoutMs), submitted.job.id)
  } catch (err) {
    await refund(prep.promptTokens).catch(() => {})
    throw err
  }
  await refund(output.usage.promptTokens + output.usage.completionTokens).catch(() => {})
  await recordUsage(c, deps, {
    model: prep.manifest.id,
    kind: usageKind(r),
    promptTokens: output.usage.promptTokens,
    completionTokens: output.usage.completionTokens,
    cached: false,
  })
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
  return streamSSE(c, async (stream) => {
    let clientGone = false
    stream.onAbort(() => {
      clientGone = true
    })
    const send = async (data: unknown) => {
      if (clientGone) return
      try {
        await stream.writeSSE({ data: typeof data === 'string' ? data : JSON.stringify(data) })
      } catch {
        clientGone = true
      }
    }
    let status = '200'
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
            await send(chunks.text(d.index, d.text, d.logprob))
          } else if (isTerminal(e)) {
            const out = outputOf(e, sub.job.id)
            for (const ch of out.choices) await send(chunks.finish(ch.index, ch.finishReason))
            if (includeUsage) await send(chunks.usage(out.usage))
            await send('[DONE]')
            await refund(out.usage.promptTokens + out.usage.completionTokens).catch(() => {})
            await recordUsage(c, deps, {
              model,
              kind: usageKind(r),
              promptTokens: out.usage.promptTokens,
              completionTokens: out.usage.completionTokens,
              cached: false,
            })
            return
          }
        }
      } catch (err) {
        const api = toApiError(err)
        status = String(api.status)
        if (api.status >= 500) log.error({ err }, 'stream failed')
        await refund(prep.promptTokens).catch(() => {})
        await send(api.toJSON())
      } finally {
        clearTimeout(timer)
        sub.abort()
        deps.metrics.requestLatency.observe(
          { route, method: 'POST', status },
          (performance.now() - startedAt) / 1000,
        )
        if (clientGone) log.info({ jobId: sub.job.id }, 'client left the stream; followed the job to its end')
      }
    })()
    keepAlive(c, deps, relay)
    await relay
  })
}

const isTerminal = (e: JobEvent) => e.type === 'completed' || e.type === 'failed' || e.type === 'canceled'
