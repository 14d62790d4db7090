/**
 * Admin route for bringing your own model (admin scope):
 *
 *   POST /v1/admin/models?name=<id>[&public=true][&onnx=<path>][&replace=true]
 *
 * The body is the model folder, either a tar archive (`application/x-tar`,
 * or gzip-compressed `application/gzip`; a single top folder is stripped) or
 * a multipart form whose file fields are named by their path in the folder:
 *
 *   tar -czf - -C my-model . | curl -X POST "$URL/v1/admin/models?name=my-model" \
 *     -H "authorization: Bearer $ADMIN_KEY" -H 'content-type: application/gzip' --data-binary @-
 *
 *   curl -X POST "$URL/v1/admin/models?name=my-model" -H "authorization: Bearer $ADMIN_KEY" \
 *     -F config.json=@config.json -F tokenizer.json=@tokenizer.json \
 *     -F tokenizer_config.json=@tokenizer_config.json -F onnx/model.onnx=@onnx/model.onnx
 *
 * The folder is validated (models/byo/validate.ts) before anything is stored;
 * a bad folder is a 400 naming every problem. The model belongs to the
 * caller's tenant, or to every tenant with `public=true`, which only an
 * operator key may ask for (so only an operator replaces a public model).
 * The whole body is held in memory and bounded by
 * PGPT_MAX_MODEL_UPLOAD_BYTES (raise it for real models, or publish with
 * `pgpt model publish` next to the store).
 */

import { createRoute, z } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { ApiError, badRequest, tooLarge } from '../../core/errors.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { InvalidModelIdError, PublishConflictError, publishByoModel } from '../../models/byo/publish.js'
import { isSafeRelativePath, memorySource } from '../../models/byo/source.js'
import { readTar, stripCommonFolder, TarError, TarTooLargeError } from '../../models/byo/tar.js'
import { ModelValidationError } from '../../models/byo/validate.js'
import type { AppContext } from '../deps.js'
import { hasScope } from '../keys.js'
import { scoped } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const flag = z
  .enum(['true', 'false', '1', '0'])
  .optional()
  .transform((v) => v === 'true' || v === '1')

const query = z.object({
  name: z
    .string()
    .min(1)
    .max(128)
    .openapi({ example: 'my-model', description: 'Model id to publish under.' }),
  public: flag.openapi({
    description: 'Every tenant may use the model (default: only yours). Operator keys only.',
  }),
  onnx: z.string().min(1).max(512).optional().openapi({
    description: 'The graph to serve, relative to the folder (default: onnx/model.onnx, model.onnx, ...).',
  }),
  replace: flag.openapi({ description: 'Replace your model of the same id.' }),
})
type Query = z.infer<typeof query>

const published = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: z.number().int(),
    owned_by: z.string(),
    context_length: z.number().int(),
    files: z.array(z.object({ path: z.string(), size: z.number().int(), sha256: z.string() })),
    skipped: z.array(z.string()),
    shape: z.object({
      layers: z.number().int(),
      kv_heads: z.number().int(),
      head_dim: z.number().int(),
      vocab_size: z.number().int(),
      dtype: z.enum(['float32', 'float16']),
      position_ids: z.boolean(),
      chat_template: z.boolean(),
      external_data: z.array(z.string()),
    }),
  })
  .openapi('PublishedModel')

const binary = { schema: z.string().openapi({ type: 'string', format: 'binary' }) }

const create = createRoute({
  method: 'post',
  path: '/v1/admin/models',
  tags: ['Admin'],
  summary: 'Publish a decoder-with-past ONNX model folder (tar or multipart upload)',
  security,
  ...scoped('admin'),
  request: {
    query,
    body: {
      // Not `required`: a required form body would run the form validator on tar uploads too.
      required: false,
      description:
        'The folder as a tar (optionally gzip) archive, or multipart/form-data with one file field per path.',
      content: {
        'application/x-tar': binary,
        'application/gzip': binary,
        'application/octet-stream': binary,
        'multipart/form-data': { schema: z.record(z.string(), z.any()) },
      },
    },
  },
  responses: {
    201: { description: 'Published.', content: { 'application/json': { schema: published } } },
    400: errorResponseOf('The upload or the model folder is not valid; the message names every problem.'),
    ...authErrors,
    409: errorResponseOf('A model with this id exists.'),
    413: errorResponseOf('The upload, or the archive unpacked, exceeds PGPT_MAX_MODEL_UPLOAD_BYTES.'),
  },
})

/** The uploaded folder as path → bytes. */
async function uploadedFiles(c: AppContext, maxBytes: number): Promise<Map<string, Uint8Array>> {
  const type = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase()
  if (type === 'multipart/form-data') {
    const form = await c.req.parseBody({ all: false })
    const files = new Map<string, Uint8Array>()
    for (const [name, value] of Object.entries(form)) {
      if (typeof value === 'string') continue
      if (!(value instanceof Blob)) continue
      if (!isSafeRelativePath(name))
        throw badRequest(`The form field '${name}' is not a relative path inside the folder.`, 'body')
      files.set(name, new Uint8Array(await value.arrayBuffer()))
    }
    return files
  }
  if (
    [
      'application/x-tar',
      'application/tar',
      'application/gzip',
      'application/x-gzip',
      'application/octet-stream',
    ].includes(type)
  ) {
    try {
      // A gzip archive may unpack to no more than an upload may hold (a gzip bomb stops there).
      return stripCommonFolder(await readTar(new Uint8Array(await c.req.arrayBuffer()), { maxBytes }))
    } catch (err) {
      if (err instanceof TarTooLargeError)
        throw tooLarge(`The archive unpacks to more than PGPT_MAX_MODEL_UPLOAD_BYTES (${maxBytes} bytes).`)
      if (err instanceof TarError)
        throw badRequest(`The upload is not a valid tar archive: ${err.message}`, 'body')
      throw err
    }
  }
  throw new ApiError(
    415,
    `Send the folder as application/x-tar, application/gzip or multipart/form-data (got '${type || 'none'}').`,
    {
      code: 'unsupported_media_type',
      type: 'invalid_request_error',
    },
  )
}

export function registerAdminModels(app: EdgeApp, { deps }: RouteContext) {
  const maxBytes = deps.config.PGPT_MAX_MODEL_UPLOAD_BYTES
  // Before the body is read: refuse by Content-Length, or count a chunked body.
  app.use('/v1/admin/models', async (c, next) => {
    if (c.req.method !== 'POST') return next()
    return bodyLimit({
      maxSize: maxBytes,
      onError: () => {
        throw tooLarge(`The upload exceeds PGPT_MAX_MODEL_UPLOAD_BYTES (${maxBytes} bytes).`)
      },
    })(c, next)
  })
  app.openapi(
    create,
    h(async (c) => {
      const q = valid<Query>(c, 'query')
      const key = c.get('key')
      const tenant = key.tenant
      // A public model is every tenant's: publishing or replacing one is the platform operator's, not a tenant's.
      if (q.public && !hasScope(key, 'operator'))
        throw new ApiError(
          403,
          "Only an operator key may publish or replace a public model (public=true); this key lacks the 'operator' scope.",
          { param: 'public', code: 'insufficient_scope' },
        )
      const files = await uploadedFiles(c, maxBytes)
      if (!files.size) throw badRequest('The upload holds no files.', 'body')
      let result: Awaited<ReturnType<typeof publishByoModel>>
      try {
        result = await publishByoModel(deps.store, memorySource(files), {
          id: q.name,
          owner: q.public ? null : tenant,
          replace: q.replace,
          ...(q.onnx ? { onnx: q.onnx } : {}),
        })
      } catch (err) {
        if (err instanceof ModelValidationError) throw badRequest(err.message, 'body', 'invalid_model')
        if (err instanceof InvalidModelIdError) throw badRequest(err.message, 'name', 'invalid_model_id')
        if (err instanceof PublishConflictError)
          throw new ApiError(409, err.message, { param: 'name', code: 'model_exists' })
        throw err
      }
      const { manifest: m, validated: v } = result
      // The next request reads the listing again: a new model shows in GET /v1/models at once (the
      // generation marker would tell it too), and a replaced one (replace=true) is not answered from
      // the kept listing's old manifest.
      deps.models.invalidate?.()
      c.get('log').info({ model: m.id, owner: m.owner, files: m.files.length }, 'model published')
      return json(
        c,
        {
          id: m.id,
          object: 'model',
          created: m.created,
          owned_by: m.owner ?? 'prometheus',
          context_length: m.context_length,
          files: m.files,
          skipped: v.skipped,
          shape: {
            layers: v.info.layers,
            kv_heads: v.info.kvHeads,
            head_dim: v.info.headDim,
            vocab_size: v.info.vocabSize,
            dtype: v.info.dtype,
            position_ids: v.info.positionIds,
            chat_template: v.info.chatTemplate,
            external_data: v.info.externalData,
          },
        },
        201,
      )
    }),
  )
}
