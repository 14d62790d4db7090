/**
 * The Batch API (OpenAI's): POST /v1/batches, GET /v1/batches/{id},
 * GET /v1/batches (newest first, `after` cursor) and POST /v1/batches/{id}/cancel.
 *
 * Creating a batch stores its record (status `validating`, batches-store.ts)
 * and enqueues one `batch` job; a worker (workers/batches/) checks every line,
 * writes the bad ones to the error file's results, fans the rest out as
 * `batch_chunk` jobs, and the last chunk to finish writes the output and error
 * files. Extension: `webhook`, a URL told once the batch ends (its body is the
 * batch object). Tenant-scoped: another tenant's id is a 404.
 *
 * The output and error files expire `output_expires_after.seconds` after they
 * are written (OpenAI's parameter, 3600 to 2592000), else after
 * PGPT_BATCH_FILE_RETENTION_DAYS. An input file that has expired is refused
 * with a 400 that says so.
 *
 * Enqueued-token limit (OpenAI's batch queue limit): a batch's tokens are
 * estimated at creation (core/openai/batch-estimate.ts) and stored on its
 * record; the tenant's unfinished batches may hold at most
 * PGPT_BATCH_QUEUE_TOKENS of them together, and a batch beyond is a 429
 * `batch_token_limit_exceeded` naming the limit and the numbers. Per tenant,
 * since a tenant's batches share its workers; the tenant's `batch-tokens`
 * ledger (core/records/ledger.ts) holds them by compare-and-swap, so racing
 * creations on any edge cannot pass it together, and a batch's share is
 * dropped once its record shows it ended. Batches take nothing from the
 * key's tokens-per-minute bucket: this limit is theirs.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError, badRequest, notFound, rateLimited, unprocessable } from '../../core/errors.js'
import { BATCH_URLS } from '../../core/jsonl.js'
import { estimateBatchTokens } from '../../core/openai/batch-estimate.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import type { QueueMessageBody } from '../../core/protocol.js'
import {
  BATCH_STATUSES,
  type BatchRecord,
  batchView,
  getBatch,
  isTerminalBatch,
  listBatches,
  newBatchId,
  parseCompletionWindow,
  putNewBatch,
  updateBatch,
} from '../../core/records/batches.js'
import {
  getFileRecord,
  isFileExpired,
  MAX_EXPIRES_AFTER_S,
  MIN_EXPIRES_AFTER_S,
  readFileText,
} from '../../core/records/files.js'
import { admit, endedByRecord, release } from '../../core/records/ledger.js'
import { defaultFileExpiresAfterS } from '../../core/retention.js'
import type { EdgeDeps } from '../deps.js'
import { webhookUrlProblem } from '../lib/webhook-url.js'
import { scoped } from '../middleware/auth/index.js'
import { cursorQuery, pageOk } from './pages.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const createBody = z
  .object({
    input_file_id: z.string().min(1).max(128),
    endpoint: z.enum(BATCH_URLS),
    completion_window: z.string().openapi({
      description: '"24h" (extension: a shorter window such as "30m" or "90s").',
      example: '24h',
    }),
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
      .nullish(),
    webhook: z
      .string()
      .max(2048)
      .optional()
      .openapi({ description: 'Extension: a URL notified once the batch ends, with the batch object.' }),
    output_expires_after: z
      .object({
        anchor: z.literal('created_at'),
        seconds: z.number().int().min(MIN_EXPIRES_AFTER_S).max(MAX_EXPIRES_AFTER_S),
      })
      .optional()
      .openapi({
        description:
          'When the output and error files expire: `seconds` (3600 to 2592000) after they are created. Default: PGPT_BATCH_FILE_RETENTION_DAYS (30 days).',
      }),
  })
  .openapi('CreateBatchRequest')
type CreateBody = z.infer<typeof createBody>

const counts = z.object({ total: z.number().int(), completed: z.number().int(), failed: z.number().int() })
const ts = z.number().int().nullable()

export const batchSchema = z
  .object({
    id: z.string(),
    object: z.literal('batch'),
    endpoint: z.enum(BATCH_URLS),
    errors: z
      .object({
        object: z.literal('list'),
        data: z.array(
          z.object({
            code: z.string(),
            message: z.string(),
            param: z.string().nullable(),
            line: z.number().int().nullable(),
          }),
        ),
      })
      .nullable(),
    input_file_id: z.string(),
    completion_window: z.string(),
    status: z.enum(BATCH_STATUSES),
    output_file_id: z.string().nullable(),
    error_file_id: z.string().nullable(),
    created_at: z.number().int(),
    in_progress_at: ts,
    expires_at: z.number().int(),
    finalizing_at: ts,
    completed_at: ts,
    failed_at: ts,
    expired_at: ts,
    cancelling_at: ts,
    cancelled_at: ts,
    request_counts: counts,
    metadata: z.record(z.string(), z.string()).nullable(),
    webhook: z.string().nullable(),
  })
  .openapi('Batch')

const idParam = z.object({ id: z.string().min(1).max(128) })
const batchJson = { 'application/json': { schema: batchSchema } }
const notFoundErr = { 404: errorResponseOf('No such batch for this tenant.') }

const create = createRoute({
  method: 'post',
  path: '/v1/batches',
  tags: ['Batches'],
  summary: 'Create a batch',
  description:
    'Runs every request of a `batch` file at lower priority than interactive traffic; results arrive in the output and error files.',
  security,
  ...scoped('batch'),
  request: { body: { required: true, content: { 'application/json': { schema: createBody } } } },
  responses: {
    200: { description: 'The batch (status validating).', content: batchJson },
    400: errorResponseOf('Invalid request or input file.'),
    ...authErrors,
    404: errorResponseOf('No such input file.'),
    422: errorResponseOf('The webhook URL is not allowed.'),
    429: errorResponseOf(
      "Rate limit reached, or the tenant's unfinished batches and this one would pass the enqueued-token limit (`batch_token_limit_exceeded`); see Retry-After.",
    ),
    503: errorResponseOf('The queue is unavailable.'),
  },
})

const get = createRoute({
  method: 'get',
  path: '/v1/batches/{id}',
  tags: ['Batches'],
  summary: 'Retrieve a batch',
  security,
  ...scoped('batch'),
  request: { params: idParam },
  responses: { 200: { description: 'The batch.', content: batchJson }, ...authErrors, ...notFoundErr },
})

const list = createRoute({
  method: 'get',
  path: '/v1/batches',
  tags: ['Batches'],
  summary: 'List batches, newest first',
  security,
  ...scoped('batch'),
  request: { query: cursorQuery() },
  responses: { ...pageOk(batchSchema, 'A page of batches.'), ...authErrors },
})

const cancel = createRoute({
  method: 'post',
  path: '/v1/batches/{id}/cancel',
  tags: ['Batches'],
  summary: 'Cancel a batch',
  description:
    'Moves the batch to `cancelling`; requests not yet started are skipped, and the batch ends `cancelled` with the output of what was done.',
  security,
  ...scoped('batch'),
  request: { params: idParam },
  responses: {
    200: { description: 'The batch.', content: batchJson },
    ...authErrors,
    ...notFoundErr,
    409: errorResponseOf('The batch has ended or is finalizing.'),
  },
})

const now = () => Math.floor(Date.now() / 1000)

/** The ledger of the tenant's enqueued batch tokens (core/records/ledger.ts). */
const BATCH_TOKENS = 'batch-tokens'

/**
 * The batch as it stands: one still `validating` whose planning job failed
 * (e.g. dead-lettered) before it could move the batch on ends failed with
 * that reason instead of staying `validating` for ever.
 */
async function settled(deps: EdgeDeps, tenant: string, b: BatchRecord): Promise<BatchRecord> {
  if (b.status !== 'validating') return b
  const job = await deps.jobs.get(tenant, b.internal.jobId)
  if (job?.state !== 'failed' && job?.state !== 'canceled') return b
  const reason = job.error ?? { code: 'batch_failed', message: `The batch job ended ${job.state}.` }
  return (
    (await updateBatch(deps.store, tenant, b.id, (cur) =>
      cur.status !== 'validating'
        ? null
        : {
            ...cur,
            status: 'failed',
            failed_at: Math.floor((job.finishedAt ?? Date.now()) / 1000),
            errors: {
              object: 'list',
              data: [{ code: reason.code, message: reason.message, param: null, line: null }],
            },
          },
    )) ?? b
  )
}

/** Holds the batch's estimate in the tenant's ledger, or throws the 429 when the unfinished batches and it pass the limit. */
async function admitBatch(deps: EdgeDeps, tenant: string, id: string, estimate: number): Promise<void> {
  const limit = deps.config.PGPT_BATCH_QUEUE_TOKENS
  const clock = deps.clock ?? Date.now
  const a = await admit(
    deps.store,
    BATCH_TOKENS,
    tenant,
    { id, weight: estimate },
    {
      caps: { maxWeight: limit },
      now: clock(),
      finished: endedByRecord(async (id) => {
        const b = await getBatch(deps.store, tenant, id)
        return b && isTerminalBatch((await settled(deps, tenant, b)).status)
      }, clock),
    },
  )
  if (a.ok) return
  throw rateLimited(
    a.held.weight === 0
      ? `Enqueued token limit reached: this batch needs about ${estimate} tokens, above the limit of ${limit} enqueued tokens; split it into smaller batches.`
      : `Enqueued token limit reached: limit ${limit} tokens; this tenant's unfinished batches hold about ${a.held.weight} and this batch needs about ${estimate}. Wait for batches to finish (or cancel some), then retry.`,
    60,
    'batch_token_limit_exceeded',
  )
}

export function registerBatches(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    create,
    h(async (c) => {
      const b = valid<CreateBody>(c, 'json')
      const key = c.get('key')
      const window = parseCompletionWindow(b.completion_window)
      if (window === null)
        throw badRequest(
          'completion_window must be "24h" (or, as an extension, a shorter window such as "30m").',
          'completion_window',
          'invalid_value',
        )
      const file = await getFileRecord(deps.store, key.tenant, b.input_file_id)
      if (!file) throw notFound('file', b.input_file_id, 'input_file_id')
      if (isFileExpired(file, (deps.clock ?? Date.now)()))
        throw badRequest(
          `The input file '${file.id}' expired at ${new Date(file.expires_at! * 1000).toISOString()}; upload it again.`,
          'input_file_id',
          'invalid_input_file',
        )
      if (file.purpose !== 'batch')
        throw badRequest(
          `The input file must have purpose 'batch' (it has '${file.purpose}').`,
          'input_file_id',
          'invalid_input_file',
        )
      if (b.webhook !== undefined) {
        const problem = webhookUrlProblem(b.webhook, deps.config.PGPT_WEBHOOK_ALLOW_PRIVATE)
        if (problem) throw unprocessable(`The webhook URL ${problem}.`, 'webhook', 'webhook_url_not_allowed')
      }
      const estimate = await estimateBatchTokens(
        deps.models,
        key.tenant,
        b.endpoint,
        (await readFileText(deps.store, key.tenant, file.id)) ?? '',
      )
      const id = newBatchId()
      const created = now()
      const requestId = c.get('requestId')
      const record: BatchRecord = {
        id,
        object: 'batch',
        endpoint: b.endpoint,
        errors: null,
        input_file_id: b.input_file_id,
        completion_window: b.completion_window,
        status: 'validating',
        output_file_id: null,
        error_file_id: null,
        created_at: created,
        in_progress_at: null,
        expires_at: created + window,
        finalizing_at: null,
        completed_at: null,
        failed_at: null,
        expired_at: null,
        cancelling_at: null,
        cancelled_at: null,
        request_counts: { total: 0, completed: 0, failed: 0 },
        metadata: b.metadata ?? null,
        webhook: b.webhook ?? null,
        internal: {
          tenant: key.tenant,
          jobId: id,
          requestId,
          apiKeyId: key.id,
          chunks: null,
          done: {},
          invalid: 0,
          outputExpiresAfterS:
            b.output_expires_after?.seconds ?? defaultFileExpiresAfterS(deps.config, 'batch_output'),
          tokenEstimate: estimate,
        },
      }
      await admitBatch(deps, key.tenant, id, estimate)
      const job = await (async () => {
        await putNewBatch(deps.store, record)
        // The job that validates and fans out; its id is the batch's (GET /v1/jobs/{batch id} shows it).
        return deps.jobs.create({
          id,
          tenant: key.tenant,
          kind: 'batch',
          input: { batchId: id },
          requestId,
          apiKeyId: key.id,
        })
      })().catch(async (err) => {
        await release(deps.store, BATCH_TOKENS, key.tenant, [id]).catch(() => {})
        throw err
      })
      const message: QueueMessageBody = { jobId: job.id, kind: job.kind, requestId }
      try {
        await deps.queue.send(JSON.stringify(message))
      } catch (err) {
        const error = { code: 'queue_unavailable', message: 'could not enqueue', param: null, line: null }
        await updateBatch(deps.store, key.tenant, id, (cur) => ({
          ...cur,
          status: 'failed',
          failed_at: now(),
          errors: { object: 'list', data: [error] },
        })).catch(() => {})
        await deps.jobs.transition(job.id, 'failed', { error }).catch(() => {})
        await release(deps.store, BATCH_TOKENS, key.tenant, [id]).catch(() => {})
        throw new ApiError(503, 'The job queue is unavailable. Please retry.', {
          code: 'queue_unavailable',
          cause: err,
        })
      }
      c.get('log').info({ batchId: id, inputFileId: b.input_file_id }, 'batch created')
      return json(c, batchView(record))
    }),
  )
  app.openapi(
    list,
    h(async (c) => {
      const q = valid<{ after?: string; limit: number }>(c, 'query')
      const page = await listBatches(deps.store, c.get('key').tenant, q)
      return json(c, {
        object: 'list',
        data: page.data.map(batchView),
        first_id: page.data[0]?.id ?? null,
        last_id: page.data.at(-1)?.id ?? null,
        has_more: page.hasMore,
      })
    }),
  )
  app.openapi(
    get,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const tenant = c.get('key').tenant
      const b = await getBatch(deps.store, tenant, id)
      if (!b) throw notFound('batch', id, 'id')
      return json(c, batchView(await settled(deps, tenant, b)))
    }),
  )
  app.openapi(
    cancel,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const tenant = c.get('key').tenant
      const before = await getBatch(deps.store, tenant, id)
      if (!before) throw notFound('batch', id, 'id')
      const after = await updateBatch(deps.store, tenant, id, (cur) =>
        cur.status === 'validating' || cur.status === 'in_progress'
          ? { ...cur, status: 'cancelling', cancelling_at: now() }
          : null,
      )
      if (!after) throw notFound('batch', id, 'id')
      if (after.status !== 'cancelling' && after.status !== 'cancelled')
        throw new ApiError(
          409,
          `The batch ${id} cannot be cancelled: its status is ${after.status}${isTerminalBatch(after.status) ? '' : ' (finalizing)'}.`,
          { code: 'batch_not_cancellable' },
        )
      return json(c, batchView(after))
    }),
  )
}
