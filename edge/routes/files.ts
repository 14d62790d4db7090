/**
 * The Files API (OpenAI's): POST /v1/files (multipart: `file`, `purpose`
 * `fine-tune` | `batch`), GET /v1/files (newest first, `purpose` filter,
 * `after` cursor), GET /v1/files/{id}, GET /v1/files/{id}/content and
 * DELETE /v1/files/{id}. Tenant-scoped: another tenant's id is a 404.
 *
 * Uploads are checked before they are stored (core/jsonl.ts): a bad line is a
 * 400 naming its line number. A file that a queued or running fine-tuning
 * job, or an unfinished batch, reads cannot be deleted (409, `file_in_use`).
 * The size limit of uploads is its own
 * (`maxFileBytes`, default PGPT_MAX_FILE_BYTES when the config has it, else
 * 100 MiB; beyond it a 413) — but the app-wide PGPT_MAX_BODY_BYTES limit runs
 * first for every route, so uploads above that are refused until app.ts
 * exempts this route from it. Storage: core/records/files.ts.
 *
 * Caps (400s, before anything is stored): a `batch` file of more than
 * PGPT_MAX_BATCH_LINES lines (`too_many_lines`, OpenAI's 50,000), and a tenant
 * at PGPT_MAX_FILES_PER_TENANT files or PGPT_MAX_STORAGE_BYTES_PER_TENANT bytes
 * (`storage_limit_exceeded`). The storage caps are hard: the upload is
 * reserved in the tenant's ledger by compare-and-swap before it is stored
 * (core/records/files.ts), so racing uploads store at most the cap.
 *
 * Expiry (OpenAI's `expires_after`, multipart fields `expires_after[anchor]`
 * = `created_at` and `expires_after[seconds]` from 3600 to 2592000, as the
 * SDKs send it; a JSON object in `expires_after` works too): `expires_at` is
 * `created_at` + seconds. Without it the purpose's default applies
 * (PGPT_BATCH_FILE_RETENTION_DAYS, PGPT_FINE_TUNE_FILE_RETENTION_DAYS;
 * core/retention.ts). An expired file is gone from every route at once (404,
 * left out of lists); the retention sweep deletes it later.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { ApiError, badRequest, forbidden, notFound, tooLarge } from '../../core/errors.js'
import { describeProblems, validateJsonl } from '../../core/jsonl.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { isTerminal } from '../../core/ports/job-store.js'
import type { ApiKeyRecord, Scope } from '../../core/ports/key-store.js'
import { isTerminalBatch, listBatches } from '../../core/records/batches.js'
import {
  createFile,
  deleteFile,
  FILE_PURPOSES,
  type FileObject,
  type FilePurpose,
  getFileObject,
  listFiles,
  MAX_EXPIRES_AFTER_S,
  MIN_EXPIRES_AFTER_S,
  readFileStream,
  StorageLimitError,
  UPLOAD_PURPOSES,
} from '../../core/records/files.js'
import { FINE_TUNE_KIND, type FineTuneInput } from '../../core/records/fine-tunes.js'
import { defaultFileExpiresAfterS } from '../../core/retention.js'
import type { EdgeDeps } from '../deps.js'
import { scoped } from '../middleware/auth/index.js'
import { cursorQuery, pageOk } from './pages.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

/** Default upload limit when neither the option nor the config sets one. */
export const DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024

export interface FilesOptions {
  /** Largest upload in bytes (a 413 beyond). */
  maxFileBytes?: number
  /** Most lines of a `batch` upload (a 400 `too_many_lines` beyond); default PGPT_MAX_BATCH_LINES. */
  maxBatchLines?: number
  /** Most stored files per tenant (a 400 `storage_limit_exceeded` beyond); default PGPT_MAX_FILES_PER_TENANT. */
  maxFilesPerTenant?: number
  /** Most stored bytes per tenant (a 400 `storage_limit_exceeded` beyond); default PGPT_MAX_STORAGE_BYTES_PER_TENANT. */
  maxStorageBytesPerTenant?: number
}

export const fileObjectSchema = z
  .object({
    id: z.string().openapi({ example: 'file-0mhd2k3c4x9a1b2c3d4e5f6' }),
    object: z.literal('file'),
    bytes: z.number().int(),
    created_at: z.number().int(),
    filename: z.string(),
    purpose: z.enum(FILE_PURPOSES),
    status: z.enum(['uploaded', 'processed', 'error']),
    status_details: z.string().nullable(),
    expires_at: z.number().int().nullable(),
  })
  .openapi('File')

const idParam = z.object({ id: z.string().min(1).max(128) })
const fileJson = { 'application/json': { schema: fileObjectSchema } }
const notFoundErr = { 404: errorResponseOf('No such file for this tenant.') }

const upload = createRoute({
  method: 'post',
  path: '/v1/files',
  tags: ['Files'],
  summary: 'Upload a file',
  description:
    'multipart/form-data with `file` (JSONL) and `purpose` (`fine-tune` or `batch`). Each line is checked; a bad one is a 400 that names its line number.',
  security,
  ...scoped('batch', 'fine-tune'),
  request: {
    body: {
      required: true,
      content: {
        'multipart/form-data': {
          schema: z.object({
            file: z
              .custom<File>((v) => v instanceof File, 'a file is required')
              .openapi({ type: 'string', format: 'binary' }),
            purpose: z.enum(UPLOAD_PURPOSES),
            'expires_after[anchor]': z
              .string()
              .optional()
              .openapi({ description: 'Expiry anchor: `created_at` (the only one, as OpenAI).' }),
            'expires_after[seconds]': z
              .string()
              .optional()
              .openapi({
                description: `Seconds after the anchor the file expires, ${MIN_EXPIRES_AFTER_S} to ${MAX_EXPIRES_AFTER_S}. Default: the purpose's retention (batch: 30 days; fine-tune: never).`,
              }),
          }),
        },
      },
    },
  },
  responses: {
    200: { description: 'The file.', content: fileJson },
    400: errorResponseOf(
      'Invalid file (the message names the line), purpose or expires_after; a batch file beyond the line cap (`too_many_lines`); or the tenant at its storage cap (`storage_limit_exceeded`).',
    ),
    ...authErrors,
    413: errorResponseOf('The file is too large.'),
  },
})

const list = createRoute({
  method: 'get',
  path: '/v1/files',
  tags: ['Files'],
  summary: 'List files',
  security,
  ...scoped('batch', 'fine-tune'),
  request: {
    query: cursorQuery({ maxLimit: 10_000, defaultLimit: 10_000 }).extend({
      purpose: z.enum(FILE_PURPOSES).optional(),
      order: z.enum(['asc', 'desc']).default('desc'),
    }),
  },
  responses: { ...pageOk(fileObjectSchema, 'A page of files.'), ...authErrors },
})

const get = createRoute({
  method: 'get',
  path: '/v1/files/{id}',
  tags: ['Files'],
  summary: 'Retrieve a file object',
  security,
  ...scoped('batch', 'fine-tune'),
  request: { params: idParam },
  responses: { 200: { description: 'The file.', content: fileJson }, ...authErrors, ...notFoundErr },
})

const content = createRoute({
  method: 'get',
  path: '/v1/files/{id}/content',
  tags: ['Files'],
  summary: "Download a file's content",
  security,
  ...scoped('batch', 'fine-tune'),
  request: { params: idParam },
  responses: {
    200: { description: 'The bytes.', content: { 'application/octet-stream': { schema: z.string() } } },
    ...authErrors,
    ...notFoundErr,
  },
})

const del = createRoute({
  method: 'delete',
  path: '/v1/files/{id}',
  tags: ['Files'],
  summary: 'Delete a file',
  security,
  ...scoped('batch', 'fine-tune'),
  request: { params: idParam },
  responses: {
    200: {
      description: 'Deleted.',
      content: {
        'application/json': {
          schema: z.object({ id: z.string(), object: z.literal('file'), deleted: z.boolean() }),
        },
      },
    },
    ...authErrors,
    ...notFoundErr,
    409: errorResponseOf('A queued or running fine-tuning job, or an unfinished batch, uses the file.'),
  },
})

/** The 400 of an upload beyond the tenant's storage caps, naming the cap. */
function storageLimitExceeded(e: StorageLimitError): ApiError {
  return badRequest(
    e.over === 'files'
      ? `This tenant stores ${e.held.files} files, the limit (${e.caps.maxFiles}); delete some before uploading more.`
      : `This upload (${e.bytes} bytes) would take the tenant's stored files to ${e.held.bytes + e.bytes} bytes, beyond the limit of ${e.caps.maxBytes}; delete some files first.`,
    'file',
    'storage_limit_exceeded',
  )
}

/** What still reads the file: a queued or running fine-tuning job, or an unfinished batch; null when nothing. */
async function fileUser(deps: EdgeDeps, tenant: string, id: string): Promise<string | null> {
  let after: string | undefined
  for (;;) {
    const page = await deps.jobs.list(tenant, { kind: FINE_TUNE_KIND, limit: 100, after })
    for (const job of page.data) {
      const input = job.input as Partial<FineTuneInput>
      if (!isTerminal(job.state) && (input.training_file === id || input.validation_file === id))
        return `the fine-tuning job '${job.id}' (${job.state})`
    }
    if (!page.hasMore || !page.data.length) break
    after = page.data.at(-1)!.id
  }
  let batchesAfter: string | undefined
  for (;;) {
    const page = await listBatches(deps.store, tenant, { after: batchesAfter, limit: 100 })
    for (const b of page.data)
      if (!isTerminalBatch(b.status) && b.input_file_id === id) return `the batch '${b.id}' (${b.status})`
    if (!page.hasMore || !page.data.length) break
    batchesAfter = page.data.at(-1)!.id
  }
  return null
}

/** The scope that reads, writes and deletes a file of each purpose (a batch's output is the batch's). */
const SCOPE_OF = {
  batch: 'batch',
  'fine-tune': 'fine-tune',
  batch_output: 'batch',
} as const satisfies Record<FilePurpose, Scope>

function requirePurposeScope(key: ApiKeyRecord, purpose: FilePurpose): void {
  if (!key.scopes.includes(SCOPE_OF[purpose]))
    throw forbidden(
      `This API key lacks the '${SCOPE_OF[purpose]}' scope that files of purpose '${purpose}' need.`,
    )
}

const expiresAfterSchema = z.object({
  anchor: z.literal('created_at'),
  seconds: z.coerce.number().int().min(MIN_EXPIRES_AFTER_S).max(MAX_EXPIRES_AFTER_S),
})

/**
 * The upload's `expires_after` in seconds, or undefined when it has none.
 * The SDKs send an object field of a multipart form as `expires_after[anchor]`
 * and `expires_after[seconds]`; a JSON object in `expires_after` is accepted too.
 */
function expiresAfterOf(form: Record<string, unknown>): number | undefined {
  const anchor = form['expires_after[anchor]']
  const seconds = form['expires_after[seconds]']
  let given: unknown
  if (anchor !== undefined || seconds !== undefined) given = { anchor, seconds }
  else if (typeof form.expires_after === 'string') {
    try {
      given = JSON.parse(form.expires_after)
    } catch {
      given = form.expires_after
    }
  } else if (form.expires_after !== undefined) given = form.expires_after
  else return undefined
  const r = expiresAfterSchema.safeParse(given)
  if (!r.success)
    throw badRequest(
      `expires_after must be {"anchor": "created_at", "seconds": n} with n an integer from ${MIN_EXPIRES_AFTER_S} (one hour) to ${MAX_EXPIRES_AFTER_S} (30 days).`,
      'expires_after',
      'invalid_value',
    )
  return r.data.seconds
}

export function registerFiles(app: EdgeApp, { deps }: RouteContext, o: FilesOptions = {}) {
  const clock = deps.clock ?? Date.now
  const maxBytes = o.maxFileBytes ?? deps.config.PGPT_MAX_FILE_BYTES ?? DEFAULT_MAX_FILE_BYTES
  if (!(maxBytes >= 1)) throw new Error('registerFiles: maxFileBytes must be >= 1')
  const maxBatchLines = o.maxBatchLines ?? deps.config.PGPT_MAX_BATCH_LINES ?? 50_000
  const maxFiles = o.maxFilesPerTenant ?? deps.config.PGPT_MAX_FILES_PER_TENANT ?? 10_000
  const maxStored =
    o.maxStorageBytesPerTenant ?? deps.config.PGPT_MAX_STORAGE_BYTES_PER_TENANT ?? 10 * 1024 ** 3
  const tooBig = () => {
    throw tooLarge(`The file exceeds the upload limit of ${maxBytes} bytes.`)
  }
  // Before the form is parsed: refuse by Content-Length, or count a chunked body.
  app.use('/v1/files', async (c, next) => {
    if (c.req.method !== 'POST') return next()
    return bodyLimit({ maxSize: maxBytes + 64 * 1024, onError: tooBig })(c, next)
  })

  app.openapi(
    upload,
    h(async (c) => {
      const form = await c.req.parseBody().catch(() => {
        throw badRequest('Send the upload as multipart/form-data with fields `file` and `purpose`.')
      })
      const purpose = form.purpose
      if (typeof purpose !== 'string' || !(UPLOAD_PURPOSES as readonly string[]).includes(purpose))
        throw badRequest(`purpose must be one of: ${UPLOAD_PURPOSES.join(', ')}.`, 'purpose', 'invalid_value')
      const p = purpose as (typeof UPLOAD_PURPOSES)[number]
      const key = c.get('key')
      if (!key.scopes.includes(SCOPE_OF[p])) throw forbidden(`This API key lacks the '${SCOPE_OF[p]}' scope.`)
      const file = form.file
      if (!(file instanceof File))
        throw badRequest('The `file` field is required.', 'file', 'missing_required_parameter')
      const expiresAfter = expiresAfterOf(form)
      if (file.size > maxBytes) tooBig()
      const bytes = new Uint8Array(await file.arrayBuffer())
      let text: string
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
      } catch {
        throw badRequest('The file is not valid UTF-8 text.', 'file', 'invalid_file')
      }
      const { problems, lines } = validateJsonl(p, text)
      if (problems.length)
        throw badRequest(`Invalid ${p} file: ${describeProblems(problems)}`, 'file', 'invalid_file')
      if (p === 'batch' && lines > maxBatchLines)
        throw badRequest(
          `The batch file has ${lines} lines; a batch may hold at most ${maxBatchLines} requests.`,
          'file',
          'too_many_lines',
        )
      const record = await createFile(
        deps.store,
        key.tenant,
        {
          filename: file.name || 'upload.jsonl',
          purpose: p,
          content: bytes,
          expiresAfterS: expiresAfter ?? defaultFileExpiresAfterS(deps.config, p),
        },
        clock(),
        { maxFiles, maxBytes: maxStored },
      ).catch((err) => {
        if (err instanceof StorageLimitError) throw storageLimitExceeded(err)
        throw err
      })
      c.get('log').info(
        { fileId: record.id, bytes: record.bytes, purpose: p, expiresAt: record.expires_at },
        'file uploaded',
      )
      return json(c, record)
    }),
  )
  app.openapi(
    list,
    h(async (c) => {
      const q = valid<{
        purpose?: FileObject['purpose']
        after?: string
        limit: number
        order: 'asc' | 'desc'
      }>(c, 'query')
      const key = c.get('key')
      if (q.purpose) requirePurposeScope(key, q.purpose)
      const page = await listFiles(deps.store, key.tenant, { ...q, now: clock() })
      // Only the files of purposes the key's scopes cover (a batch key does not see training data).
      const data = page.data.filter((f) => key.scopes.includes(SCOPE_OF[f.purpose]))
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
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const f = await getFileObject(deps.store, c.get('key').tenant, id, clock())
      if (!f) throw notFound('file', id, 'id')
      requirePurposeScope(c.get('key'), f.purpose)
      return json(c, f)
    }),
  )
  app.openapi(
    content,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const f = await getFileObject(deps.store, c.get('key').tenant, id, clock())
      if (!f) throw notFound('file', id, 'id')
      requirePurposeScope(c.get('key'), f.purpose)
      const body = await readFileStream(deps.store, c.get('key').tenant, id, clock())
      if (!body) throw notFound('file', id, 'id')
      return c.body(body, 200, { 'content-type': 'application/octet-stream' })
    }),
  )
  app.openapi(
    del,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const tenant = c.get('key').tenant
      const f = await getFileObject(deps.store, tenant, id, clock())
      if (!f) throw notFound('file', id, 'id')
      requirePurposeScope(c.get('key'), f.purpose)
      const user = await fileUser(deps, tenant, id)
      if (user)
        throw new ApiError(
          409,
          `The file '${id}' is in use by ${user}; cancel it or wait for it to finish, then delete the file.`,
          { param: 'file_id', code: 'file_in_use' },
        )
      if (!(await deleteFile(deps.store, tenant, id, clock()))) throw notFound('file', id, 'id')
      return json(c, { id, object: 'file', deleted: true })
    }),
  )
}
