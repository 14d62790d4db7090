/**
 * Async jobs: POST /v1/jobs (webhook, webhook_events_filter, `Prefer: wait=N`),
 * GET /v1/jobs/{id}, GET /v1/jobs (cursor pagination), POST /v1/jobs/{id}/cancel
 * and GET /v1/jobs/{id}/stream (the job's events as SSE, resumable with
 * Last-Event-ID). Every read is tenant-scoped: another tenant's id is a 404.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { streamSSE } from 'hono/streaming'
import { ApiError, badRequest, forbidden, notFound, unprocessable } from '../../core/errors.js'
import { jobGeneration, prepareGeneration } from '../../core/openai/generation-request.js'
import {
  authErrors,
  chatMessage,
  errorResponseOf,
  modelField,
  promptText,
  REQUEST_BOUNDS,
  samplingFields,
} from '../../core/openai/schemas.js'
import type { EventPosition, JobEvent } from '../../core/ports/events.js'
import { isTerminal, type JobRecord } from '../../core/ports/job-store.js'
import type { Scope } from '../../core/ports/key-store.js'
import { samplingBounds } from '../../core/protocol.js'
import { FINE_TUNE_KIND } from '../../core/records/fine-tunes.js'
import type { AppContext } from '../deps.js'
import {
  awaitTerminal,
  canceledUsage,
  cancelJob,
  keepAlive,
  outputOf,
  refundUnused,
  submitGeneration,
} from '../generation/run.js'
import { hasScope } from '../keys.js'
import { webhookUrlProblem } from '../lib/webhook-url.js'
import { scoped } from '../middleware/auth/index.js'
import { cursorQuery, pageOk } from './pages.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

/** Longest `Prefer: wait=N`, in seconds. */
export const MAX_PREFER_WAIT_S = 60

// Strict, as the interactive requests (core/openai/schemas.ts): a field we do not implement is refused by name.
const jobInput = z
  .strictObject({
    prompt: promptText.optional(),
    messages: z.array(chatMessage).min(1).max(REQUEST_BOUNDS.messages).optional(),
    ...samplingFields,
    logprobs: samplingBounds.topLogprobs.nullish(),
    echo: z.boolean().nullish(),
  })
  .openapi('GenerationJobInput')

const createBody = z
  .strictObject({
    model: modelField,
    input: jobInput,
    webhook: z.string().max(2048).optional().openapi({ description: 'URL notified of the job’s progress.' }),
    webhook_events_filter: z
      .array(z.enum(['start', 'output', 'completed']))
      .max(3)
      .optional()
      .openapi({ description: 'Which events reach the webhook (default: all).' }),
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
      .optional(),
  })
  .openapi('CreateJobRequest')
type CreateBody = z.infer<typeof createBody>

const job = z
  .object({
    id: z.string(),
    object: z.literal('job'),
    kind: z.string(),
    model: z.string().nullable(),
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']),
    created_at: z.number().int(),
    started_at: z.number().int().nullable(),
    completed_at: z.number().int().nullable(),
    request_id: z.string().nullable(),
    input: z.unknown(),
    output: z.unknown().nullable(),
    error: z.object({ message: z.string(), code: z.string() }).nullable(),
    metadata: z.record(z.string(), z.string()).nullable(),
    webhook: z.string().nullable(),
    webhook_events_filter: z.array(z.string()).nullable(),
    cancel_requested: z.boolean(),
    attempts: z.number().int(),
    urls: z.object({ get: z.string(), cancel: z.string(), stream: z.string() }),
  })
  .openapi('Job')

const secs = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000))

export function jobView(r: JobRecord) {
  const base = `/v1/jobs/${r.id}`
  return {
    id: r.id,
    object: 'job' as const,
    kind: r.kind,
    model: r.model ?? null,
    status: r.state,
    created_at: secs(r.createdAt)!,
    started_at: secs(r.startedAt),
    completed_at: secs(r.finishedAt),
    request_id: r.requestId ?? null,
    input: r.input,
    output: r.output ?? null,
    error: r.error ?? null,
    metadata: r.metadata ?? null,
    webhook: r.webhook?.url ?? null,
    webhook_events_filter: r.webhook ? r.webhook.eventsFilter : null,
    cancel_requested: r.cancelRequested,
    attempts: r.attempts,
    urls: { get: base, cancel: `${base}/cancel`, stream: `${base}/stream` },
  }
}

const idParam = z.object({ id: z.string().min(1).max(128) })

/** The kind of the jobs this API creates and cancels (edge/generation/run.ts). */
const JOBS_KIND = 'generation'
/** Where the other kinds a tenant may hold are canceled, for the 409 that points there. */
const CANCEL_ROUTE_OF: Record<string, string> = {
  [FINE_TUNE_KIND]: 'POST /v1/fine_tuning/jobs/{id}/cancel',
  batch: 'POST /v1/batches/{id}/cancel',
}
const jobJson = { 'application/json': { schema: job } }
const notFoundErr = { 404: errorResponseOf('No such job for this tenant.') }

const create = createRoute({
  method: 'post',
  path: '/v1/jobs',
  tags: ['Jobs'],
  summary: 'Create an asynchronous generation job',
  description:
    'Returns 201 with the job at once, or, with `Prefer: wait=N` (N ≤ 60), after up to N seconds with its output when it finished.',
  security,
  ...scoped('generate'),
  request: {
    body: { required: true, content: { 'application/json': { schema: createBody } } },
    headers: z.object({ prefer: z.string().optional().openapi({ example: 'wait=10' }) }),
  },
  responses: {
    201: { description: 'The job.', content: jobJson },
    400: errorResponseOf('Invalid request.'),
    ...authErrors,
    404: errorResponseOf('Unknown model.'),
    422: errorResponseOf('The webhook URL is not allowed.'),
  },
})

const get = createRoute({
  method: 'get',
  path: '/v1/jobs/{id}',
  tags: ['Jobs'],
  summary: 'Retrieve a job',
  security,
  ...scoped('generate'),
  request: { params: idParam },
  responses: { 200: { description: 'The job.', content: jobJson }, ...authErrors, ...notFoundErr },
})

const list = createRoute({
  method: 'get',
  path: '/v1/jobs',
  tags: ['Jobs'],
  summary: 'List jobs, newest first',
  security,
  ...scoped('generate'),
  request: { query: cursorQuery() },
  responses: { ...pageOk(job, 'A page of jobs.'), ...authErrors },
})

const cancel = createRoute({
  method: 'post',
  path: '/v1/jobs/{id}/cancel',
  tags: ['Jobs'],
  summary: 'Cancel a job',
  description: 'A queued job is canceled at once; a running one when its worker next checks.',
  security,
  ...scoped('generate'),
  request: { params: idParam },
  responses: {
    200: { description: 'The job.', content: jobJson },
    ...authErrors,
    ...notFoundErr,
    409: errorResponseOf(
      'Not a generation job: fine-tuning jobs and batches are canceled through their own routes.',
    ),
  },
})

const stream = createRoute({
  method: 'get',
  path: '/v1/jobs/{id}/stream',
  tags: ['Jobs'],
  summary: "Stream a job's events (SSE)",
  description:
    'Events `start`, `token`, `progress`, `output`, then one of `completed`, `failed`, `canceled`; `id:` is `<run>-<seq>` (send Last-Event-ID to resume). A job run again after its worker was lost starts a new run: a `start` event whose `attempt` is the new run, then that run’s events from seq 1.',
  security,
  ...scoped('generate'),
  request: { params: idParam },
  responses: {
    200: { description: 'Server-sent events.', content: { 'text/event-stream': { schema: z.string() } } },
    ...authErrors,
    ...notFoundErr,
  },
})

/** An event's SSE id: `<run>-<seq>`, so Last-Event-ID resumes across runs (core/ports/events.ts). */
export const sseEventId = (e: EventPosition) => `${e.run}-${e.seq}`

/**
 * Last-Event-ID back to a position: `<run>-<seq>`, or a plain seq (a client of the
 * ids from before runs: run 1's). Nothing seen yet (seq 0), or anything else: undefined.
 */
export function parseLastEventId(header: string | undefined): EventPosition | undefined {
  const m = /^(?:(\d{1,15})-)?(\d{1,15})$/.exec(header?.trim() ?? '')
  if (!m || Number(m[2]) === 0) return undefined
  return { run: m[1] === undefined ? 1 : Number(m[1]), seq: Number(m[2]) }
}

function parsePrefer(header: string | undefined): number {
  const m = header ? /(?:^|[,;\s])wait=(\d+)/i.exec(header) : null
  return m ? Math.min(MAX_PREFER_WAIT_S, Number(m[1])) : 0
}

async function getJob(c: AppContext, ctx: RouteContext, id: string): Promise<JobRecord> {
  const r = await ctx.deps.jobs.get(c.get('key').tenant, id)
  if (!r) throw notFound('job', id, 'id')
  return r
}

/**
 * The scope that reads a job of each kind here: a fine-tuning job or a batch shows under /v1/jobs too,
 * but only to a key that may read it through its own API (a generate-only key does not see training
 * files or batch inputs). Kinds not named (extra handler kinds) are generation-like.
 */
const READ_SCOPE_OF: Record<string, Scope> = {
  [FINE_TUNE_KIND]: 'fine-tune',
  batch: 'batch',
  batch_chunk: 'batch',
}
const readScopeOf = (kind: string): Scope => READ_SCOPE_OF[kind] ?? 'generate'

async function readableJob(c: AppContext, ctx: RouteContext, id: string): Promise<JobRecord> {
  const r = await getJob(c, ctx, id)
  const scope = readScopeOf(r.kind)
  if (!hasScope(c.get('key'), scope))
    throw forbidden(`This API key lacks the '${scope}' scope that ${r.kind} jobs need.`)
  return r
}

export function registerJobs(app: EdgeApp, ctx: RouteContext) {
  const { deps, tokens } = ctx
  app.openapi(
    create,
    h(async (c) => {
      const b = valid<CreateBody>(c, 'json')
      const i = b.input
      if ((i.prompt === undefined) === (i.messages === undefined))
        throw badRequest('Give exactly one of input.prompt and input.messages.', 'input.prompt')
      if (b.webhook !== undefined) {
        const problem = webhookUrlProblem(b.webhook, deps.config.PGPT_WEBHOOK_ALLOW_PRIVATE)
        if (problem) throw unprocessable(`The webhook URL ${problem}.`, 'webhook', 'webhook_url_not_allowed')
      }
      const r = jobGeneration(b.model, i)
      // Labelled with the model's id once it is found: a request's own string is no metric label.
      c.set('model', 'unknown')
      const prep = await prepareGeneration(deps.models, c.get('key').tenant, r)
      c.set('model', prep.manifest.id)
      const refund = await tokens.take(c, prep.tokenBudget)
      const sub = await submitGeneration(c, deps, prep.input, {
        ...(b.webhook ? { webhook: { url: b.webhook, eventsFilter: b.webhook_events_filter ?? [] } } : {}),
        ...(b.metadata ? { metadata: b.metadata } : {}),
      })
      // Follow the job to its end in the background, for the token refund only: its worker records
      // its usage (workers/generation/usage.ts), so nothing is lost if this follower is.
      const follow = (async () => {
        try {
          const end = await awaitTerminal(sub, deps.syncTimeoutMs ?? 300_000)
          // Canceled after it began generating: it used what it generated.
          await refundUnused(refund)(canceledUsage(end) ?? outputOf(end, sub.job.id).usage)
        } catch {
          await refund(prep.promptTokens).catch(() => {})
        }
      })()
      keepAlive(c, deps, follow)
      const wait = parsePrefer(c.req.header('prefer'))
      if (wait > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined
        await Promise.race([follow, new Promise((resolve) => (timer = setTimeout(resolve, wait * 1000)))])
        clearTimeout(timer)
        c.header('preference-applied', `wait=${wait}`)
      }
      const latest = (await deps.jobs.get(c.get('key').tenant, sub.job.id)) ?? sub.job
      c.header('location', `/v1/jobs/${latest.id}`)
      return json(c, jobView(latest), 201)
    }),
  )
  app.openapi(
    list,
    h(async (c) => {
      const q = valid<{ after?: string; limit: number }>(c, 'query')
      const key = c.get('key')
      const page = await deps.jobs.list(key.tenant, { after: q.after, limit: q.limit })
      // Only the kinds the key's scopes read (a page may so hold fewer than `limit`).
      const data = page.data.filter((j) => hasScope(key, readScopeOf(j.kind)))
      return json(c, {
        object: 'list',
        data: data.map(jobView),
        first_id: data[0]?.id ?? null,
        last_id: data.at(-1)?.id ?? null,
        has_more: page.hasMore,
      })
    }),
  )
  app.openapi(
    get,
    h(async (c) => json(c, jobView(await readableJob(c, ctx, valid<{ id: string }>(c, 'param').id)))),
  )
  app.openapi(
    cancel,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const job = await getJob(c, ctx, id)
      // This route is the generation jobs' (scope `generate`); fine-tuning jobs and batches have their own
      // cancel routes and scopes, which a generate-only key must not get around.
      if (job.kind !== JOBS_KIND)
        throw new ApiError(
          409,
          `The job '${id}' is a ${job.kind} job, not a generation job; cancel it through its own API (${CANCEL_ROUTE_OF[job.kind] ?? 'its own route'}).`,
          { param: 'id', code: 'wrong_job_kind' },
        )
      const r = await cancelJob(deps, c.get('key').tenant, id)
      if (!r) throw notFound('job', id, 'id')
      return json(c, jobView(r))
    }),
  )
  app.openapi(
    stream,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const rec = await readableJob(c, ctx, id)
      const after = parseLastEventId(c.req.header('last-event-id'))
      c.set('streaming', true)
      return streamSSE(c, async (s) => {
        const controller = new AbortController()
        s.onAbort(() => controller.abort())
        const write = (e: Pick<JobEvent, 'type' | 'data' | 'run' | 'seq'>) =>
          s.writeSSE({ event: e.type, id: sseEventId(e), data: JSON.stringify(e.data ?? null) })
        if (isTerminal(rec.state) && !after) {
          // Finished before the caller came: one terminal event from the record.
          const type = rec.state === 'succeeded' ? 'completed' : rec.state
          await write({
            type: type as JobEvent['type'],
            run: rec.attempts,
            seq: 0,
            data: rec.state === 'succeeded' ? rec.output : (rec.error ?? null),
          })
          return
        }
        const timer = setTimeout(() => controller.abort(), deps.syncTimeoutMs ?? 300_000)
        try {
          for await (const e of deps.events.subscribe(id, { after, signal: controller.signal }))
            await write(e)
        } catch (err) {
          if (!controller.signal.aborted) throw new ApiError(500, 'The event stream failed.', { cause: err })
        } finally {
          clearTimeout(timer)
        }
      })
    }),
  )
}
