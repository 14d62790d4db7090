/**
 * Fine-tuning jobs, as OpenAI's API: POST /v1/fine_tuning/jobs, GET
 * /v1/fine_tuning/jobs (cursor pagination), GET /v1/fine_tuning/jobs/{id},
 * GET …/{id}/events and GET …/{id}/checkpoints (newest first, `after` +
 * `limit`), POST …/{id}/cancel.
 *
 * A job is a `fine_tune` job record plus a queue message, like a generation
 * job; a worker runs it (workers/fine-tuning) and publishes the result as the
 * model `ft:<base>:<tenant>:<suffix>:<id>`, visible to this tenant only. Its
 * events and checkpoints live in the ObjectStore (core/records/fine-tunes.ts).
 * Every read is tenant-scoped: another tenant's job, file or model is a 404.
 *
 * Bounds: one job's work by PGPT_MAX_FINE_TUNE_STEPS (a 400 at creation), a
 * tenant's by PGPT_MAX_ACTIVE_FINE_TUNES, the jobs it has queued or running
 * at once (a 429 `fine_tune_limit_exceeded` beyond; OpenAI limits active jobs
 * too). The active jobs are entries of the tenant's `fine-tunes` ledger
 * (core/records/ledger.ts, compare-and-swap: racing creations on any edge
 * cannot pass it together), dropped once their job record has ended. Trained
 * tokens are not counted at creation (that needs the base model's tokenizer
 * over the whole file); the step cap bounds them. Fine-tuning takes nothing
 * from the key's tokens-per-minute bucket.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError, badRequest, notFound, rateLimited, unprocessable } from '../../core/errors.js'
import { newId } from '../../core/ids.js'
import { splitJsonl } from '../../core/jsonl.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { isTerminal, type JobRecord } from '../../core/ports/job-store.js'
import type { QueueMessageBody } from '../../core/protocol.js'
import { getFileObject, readFileText } from '../../core/records/files.js'
import {
  AUTO_HYPERPARAMETERS,
  appendEvent,
  DEFAULT_MAX_FINE_TUNE_STEPS,
  FINE_TUNE_KIND,
  type FineTuneHyperparameters,
  type FineTuneInput,
  fineTunedModelName,
  listCheckpoints,
  listEvents,
  plannedEpochs,
  readStatus,
} from '../../core/records/fine-tunes.js'
import { admit, endedByRecord, release } from '../../core/records/ledger.js'
import type { AppContext, EdgeDeps } from '../deps.js'
import { webhookUrlProblem } from '../lib/webhook-url.js'
import { scoped } from '../middleware/auth/index.js'
import {
  type CreateFineTuningBody,
  createFineTuningBody,
  fineTuningCheckpoint,
  fineTuningEvent,
  fineTuningJob,
  fineTuningJobView,
  type HyperparametersRequest,
} from './fine-tuning-view.js'
import { cursorQuery, listOf } from './pages.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const TAG = ['Fine-tuning']
const idParam = z.object({ fine_tuning_job_id: z.string().min(1).max(128) })
const jobJson = { 'application/json': { schema: fineTuningJob } }
const notFoundErr = { 404: errorResponseOf('No such fine-tuning job for this tenant.') }
const pageQuery = cursorQuery({ maxCursor: 160 })
type PageQuery = z.infer<typeof pageQuery>

const create = createRoute({
  method: 'post',
  path: '/v1/fine_tuning/jobs',
  tags: TAG,
  summary: 'Create a fine-tuning job (LoRA)',
  description:
    'Trains LoRA adapters on an uploaded `fine-tune` file on a worker; the result is published as `ft:<base>:<tenant>:<suffix>:<id>` unless its validation loss is worse than the base model’s.',
  security,
  ...scoped('fine-tune'),
  request: { body: { required: true, content: { 'application/json': { schema: createFineTuningBody } } } },
  responses: {
    200: { description: 'The job.', content: jobJson },
    400: errorResponseOf('Invalid request or file.'),
    ...authErrors,
    404: errorResponseOf('Unknown model.'),
    422: errorResponseOf('The webhook URL is not allowed.'),
    429: errorResponseOf(
      'Rate limit reached, or the tenant has PGPT_MAX_ACTIVE_FINE_TUNES jobs queued or running (`fine_tune_limit_exceeded`); see Retry-After.',
    ),
  },
})

const list = createRoute({
  method: 'get',
  path: '/v1/fine_tuning/jobs',
  tags: TAG,
  summary: 'List fine-tuning jobs, newest first',
  security,
  ...scoped('fine-tune'),
  request: { query: pageQuery },
  responses: {
    200: {
      description: 'A page of jobs.',
      content: { 'application/json': { schema: listOf(fineTuningJob) } },
    },
    ...authErrors,
  },
})

const get = createRoute({
  method: 'get',
  path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}',
  tags: TAG,
  summary: 'Retrieve a fine-tuning job',
  security,
  ...scoped('fine-tune'),
  request: { params: idParam },
  responses: { 200: { description: 'The job.', content: jobJson }, ...authErrors, ...notFoundErr },
})

const events = createRoute({
  method: 'get',
  path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}/events',
  tags: TAG,
  summary: "A fine-tuning job's events, newest first",
  description: 'Created, validating, each step’s training loss, validation losses, checkpoints, the end.',
  security,
  ...scoped('fine-tune'),
  request: { params: idParam, query: pageQuery },
  responses: {
    200: {
      description: 'A page of events.',
      content: { 'application/json': { schema: listOf(fineTuningEvent) } },
    },
    ...authErrors,
    ...notFoundErr,
  },
})

const checkpoints = createRoute({
  method: 'get',
  path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints',
  tags: TAG,
  summary: "A fine-tuning job's checkpoints, newest first",
  security,
  ...scoped('fine-tune'),
  request: { params: idParam, query: pageQuery },
  responses: {
    200: {
      description: 'A page of checkpoints.',
      content: { 'application/json': { schema: listOf(fineTuningCheckpoint) } },
    },
    ...authErrors,
    ...notFoundErr,
  },
})

const cancel = createRoute({
  method: 'post',
  path: '/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel',
  tags: TAG,
  summary: 'Cancel a fine-tuning job',
  description: 'A queued job is cancelled at once; a running one after its current step.',
  security,
  ...scoped('fine-tune'),
  request: { params: idParam },
  responses: { 200: { description: 'The job.', content: jobJson }, ...authErrors, ...notFoundErr },
})

/** 'auto' and absent fields take AUTO_HYPERPARAMETERS. */
function resolveHyperparameters(
  ...given: (HyperparametersRequest | null | undefined)[]
): FineTuneHyperparameters {
  const out = { ...AUTO_HYPERPARAMETERS }
  for (const g of given)
    for (const [k, v] of Object.entries(g ?? {}))
      if (v !== undefined && v !== 'auto') out[k as keyof FineTuneHyperparameters] = v as number
  return out
}

async function checkFile(c: AppContext, ctx: RouteContext, id: string, param: string): Promise<void> {
  const f = await getFileObject(ctx.deps.store, c.get('key').tenant, id)
  if (!f) throw badRequest(`The file '${id}' does not exist.`, param, 'file_not_found')
  if (f.purpose !== 'fine-tune')
    throw badRequest(
      `The file '${id}' has purpose '${f.purpose}', not 'fine-tune'.`,
      param,
      'invalid_file_purpose',
    )
}

/**
 * PGPT_MAX_FINE_TUNE_STEPS at creation: steps counted as epochs × the training file's
 * examples (its lines; the worker's rows are at most as many) / batch_size. 'auto' epochs
 * are lowered by the worker to fit, so only one epoch beyond the cap refuses them.
 */
async function checkSteps(
  c: AppContext,
  ctx: RouteContext,
  fileId: string,
  h: FineTuneHyperparameters,
): Promise<void> {
  const max = ctx.deps.config.PGPT_MAX_FINE_TUNE_STEPS ?? DEFAULT_MAX_FINE_TUNE_STEPS
  const text = await readFileText(ctx.deps.store, c.get('key').tenant, fileId)
  if (text === null)
    throw badRequest(`The file '${fileId}' does not exist.`, 'training_file', 'file_not_found')
  const examples = splitJsonl(text).length
  const p = plannedEpochs(h.n_epochs, examples, examples, h.batch_size, max)
  if (!p.ok)
    throw badRequest(
      `This job would run ${p.steps} training steps (${p.epochs} epochs of ${examples} examples, ${h.batch_size} a step), beyond the limit of ${max}; use fewer epochs, a larger batch_size or a smaller training file.`,
      h.n_epochs === 'auto' ? 'training_file' : 'hyperparameters.n_epochs',
      'too_many_steps',
    )
}

/** The ledger of the tenant's queued and running fine-tuning jobs (core/records/ledger.ts). */
const ACTIVE_FINE_TUNES = 'fine-tunes'

/** Holds a place for the job among the tenant's active ones, or throws the 429 when they are at the cap. */
async function admitFineTune(deps: EdgeDeps, tenant: string, id: string): Promise<void> {
  const max = deps.config.PGPT_MAX_ACTIVE_FINE_TUNES
  const clock = deps.clock ?? Date.now
  const a = await admit(
    deps.store,
    ACTIVE_FINE_TUNES,
    tenant,
    { id, weight: 1 },
    {
      caps: { maxEntries: max },
      now: clock(),
      finished: endedByRecord(async (id) => {
        const job = await deps.jobs.get(tenant, id)
        return job && isTerminal(job.state)
      }, clock),
    },
  )
  if (!a.ok)
    throw rateLimited(
      `This tenant has ${a.held.entries} fine-tuning jobs queued or running, the limit (${max}); wait for one to finish or cancel one, then retry.`,
      60,
      'fine_tune_limit_exceeded',
    )
}

export function registerFineTuning(app: EdgeApp, ctx: RouteContext) {
  const { deps } = ctx
  const getJob = async (c: AppContext, id: string): Promise<JobRecord> => {
    const r = await deps.jobs.get(c.get('key').tenant, id)
    if (!r || r.kind !== FINE_TUNE_KIND) throw notFound('fine-tuning job', id, 'fine_tuning_job_id')
    return r
  }
  const view = async (r: JobRecord) => {
    const v = fineTuningJobView(
      r,
      r.state === 'running' ? await readStatus(deps.store, r.id).catch(() => null) : null,
    )
    // A caller who saw the job succeed lists models next: the catalog's cached listing
    // (reused for seconds) may predate the publish. get() re-reads it when the model is missing.
    if (v.fine_tuned_model) await deps.models.get(r.tenant, v.fine_tuned_model).catch(() => null)
    return v
  }

  app.openapi(
    create,
    h(async (c) => {
      const b = valid<CreateFineTuningBody>(c, 'json')
      const key = c.get('key')
      // Labelled with the model's id once it is found: a request's own string is no metric label.
      c.set('model', 'unknown')
      const base = await deps.models.get(key.tenant, b.model)
      if (!base)
        throw new ApiError(404, `The model '${b.model}' does not exist or you do not have access to it.`, {
          param: 'model',
          code: 'model_not_found',
        })
      if (base.source === 'fine-tune')
        throw badRequest(
          'Fine-tuning a fine-tuned model is not supported; use its base model.',
          'model',
          'model_not_supported',
        )
      c.set('model', base.id)
      await checkFile(c, ctx, b.training_file, 'training_file')
      if (b.validation_file) await checkFile(c, ctx, b.validation_file, 'validation_file')
      const hyperparameters = resolveHyperparameters(b.hyperparameters, b.method?.supervised?.hyperparameters)
      await checkSteps(c, ctx, b.training_file, hyperparameters)
      if (b.webhook !== undefined) {
        const problem = webhookUrlProblem(b.webhook, deps.config.PGPT_WEBHOOK_ALLOW_PRIVATE)
        if (problem) throw unprocessable(`The webhook URL ${problem}.`, 'webhook', 'webhook_url_not_allowed')
      }
      const id = `ftjob-${newId('x').slice(2)}`
      const input: FineTuneInput = {
        model: b.model,
        training_file: b.training_file,
        validation_file: b.validation_file ?? null,
        hyperparameters,
        suffix: b.suffix ?? null,
        seed: b.seed ?? Math.floor(Math.random() * 2_147_483_647),
        fine_tuned_model: fineTunedModelName(b.model, key.tenant, b.suffix ?? null, id),
      }
      const requestId = c.get('requestId')
      await admitFineTune(deps, key.tenant, id)
      const job = await deps.jobs
        .create({
          id,
          tenant: key.tenant,
          kind: FINE_TUNE_KIND,
          model: b.model,
          input,
          requestId,
          apiKeyId: key.id,
          ...(b.webhook ? { webhook: { url: b.webhook, eventsFilter: b.webhook_events_filter ?? [] } } : {}),
          ...(b.metadata ? { metadata: b.metadata } : {}),
        })
        .catch(async (err) => {
          await release(deps.store, ACTIVE_FINE_TUNES, key.tenant, [id]).catch(() => {})
          throw err
        })
      await appendEvent(deps.store, job.id, { message: `Created fine-tuning job: ${job.id}` })
      const message: QueueMessageBody = { jobId: job.id, kind: job.kind, requestId }
      try {
        await deps.queue.send(JSON.stringify(message))
      } catch (err) {
        await deps.jobs
          .transition(job.id, 'failed', {
            error: { message: 'could not enqueue', code: 'queue_unavailable' },
          })
          .catch(() => {})
        await release(deps.store, ACTIVE_FINE_TUNES, key.tenant, [id]).catch(() => {})
        throw new ApiError(503, 'The job queue is unavailable. Please retry.', {
          code: 'queue_unavailable',
          cause: err,
        })
      }
      await appendEvent(deps.store, job.id, { message: 'Fine-tuning job queued.' })
      c.get('log').info({ jobId: job.id, model: b.model }, 'fine-tuning job enqueued')
      return json(c, await view(job))
    }),
  )

  app.openapi(
    list,
    h(async (c) => {
      const q = valid<PageQuery>(c, 'query')
      const page = await deps.jobs.list(c.get('key').tenant, {
        after: q.after,
        limit: q.limit,
        kind: FINE_TUNE_KIND,
      })
      const data = await Promise.all(page.data.map(view))
      return json(c, {
        object: 'list',
        data,
        first_id: data[0]?.id ?? null,
        last_id: data.at(-1)?.id ?? null,
        has_more: page.hasMore,
      })
    }),
  )

  app.openapi(
    get,
    h(async (c) =>
      json(
        c,
        await view(await getJob(c, valid<{ fine_tuning_job_id: string }>(c, 'param').fine_tuning_job_id)),
      ),
    ),
  )

  app.openapi(
    events,
    h(async (c) => {
      const { fine_tuning_job_id: id } = valid<{ fine_tuning_job_id: string }>(c, 'param')
      const q = valid<PageQuery>(c, 'query')
      await getJob(c, id)
      const page = await listEvents(deps.store, id, { after: q.after, limit: q.limit })
      return json(c, {
        object: 'list',
        data: page.data,
        first_id: page.data[0]?.id ?? null,
        last_id: page.data.at(-1)?.id ?? null,
        has_more: page.hasMore,
      })
    }),
  )

  app.openapi(
    checkpoints,
    h(async (c) => {
      const { fine_tuning_job_id: id } = valid<{ fine_tuning_job_id: string }>(c, 'param')
      const q = valid<PageQuery>(c, 'query')
      await getJob(c, id)
      const all = (await listCheckpoints(deps.store, id)).reverse()
      let start = 0
      if (q.after) start = all.findIndex((k) => k.id === q.after) + 1
      const data = all.slice(start, start + q.limit).map((k) => ({
        object: k.object,
        id: k.id,
        created_at: k.created_at,
        fine_tuned_model_checkpoint: k.fine_tuned_model_checkpoint,
        fine_tuning_job_id: k.fine_tuning_job_id,
        step_number: k.step_number,
        metrics: k.metrics,
      }))
      return json(c, {
        object: 'list',
        data,
        first_id: data[0]?.id ?? null,
        last_id: data.at(-1)?.id ?? null,
        has_more: start + q.limit < all.length,
      })
    }),
  )

  app.openapi(
    cancel,
    h(async (c) => {
      const { fine_tuning_job_id: id } = valid<{ fine_tuning_job_id: string }>(c, 'param')
      const before = await getJob(c, id)
      if (isTerminal(before.state))
        throw badRequest(
          `The job is already ${before.state === 'canceled' ? 'cancelled' : before.state}.`,
          'fine_tuning_job_id',
          'job_finished',
        )
      const r = await deps.jobs.requestCancel(c.get('key').tenant, id)
      if (!r) throw notFound('fine-tuning job', id, 'fine_tuning_job_id')
      await appendEvent(deps.store, id, {
        message:
          r.state === 'canceled'
            ? 'Fine-tuning job cancelled.'
            : 'Cancellation requested; the job stops after its current step.',
      })
      return json(c, await view(r))
    }),
  )
}
