/**
 * GET /v1/models and GET /v1/models/{id}: the models this tenant may call.
 * DELETE /v1/models/{id}: deletes one of the tenant's fine-tuned models
 * (`fine-tune` scope); base and bundled models cannot be deleted this way.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError, forbidden } from '../../core/errors.js'
import { deleteModel, type ModelManifest } from '../../core/model-manifest.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { anyKey, scoped } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const model = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: z.number().int(),
    owned_by: z.string(),
    context_length: z.number().int(),
  })
  .openapi('Model')

const toModel = (m: ModelManifest) => ({
  id: m.id,
  object: 'model' as const,
  created: m.created,
  owned_by: m.owner ?? 'prometheus',
  context_length: m.context_length,
})

const list = createRoute({
  method: 'get',
  path: '/v1/models',
  tags: ['Models'],
  summary: 'List the models you can use',
  security,
  ...anyKey,
  responses: {
    200: {
      description: 'The models.',
      content: {
        'application/json': { schema: z.object({ object: z.literal('list'), data: z.array(model) }) },
      },
    },
    ...authErrors,
  },
})

const get = createRoute({
  method: 'get',
  path: '/v1/models/{id}',
  tags: ['Models'],
  summary: 'Retrieve a model',
  security,
  ...anyKey,
  request: { params: z.object({ id: z.string().min(1).openapi({ example: 'prometheus-mini' }) }) },
  responses: {
    200: { description: 'The model.', content: { 'application/json': { schema: model } } },
    ...authErrors,
    404: errorResponseOf('No such model for this tenant.'),
  },
})

const del = createRoute({
  method: 'delete',
  path: '/v1/models/{id}',
  tags: ['Models'],
  summary: 'Delete a fine-tuned model',
  description:
    'Deletes one of your fine-tuned models (`ft:…`); it disappears from /v1/models and can no longer be used. Its fine-tuning job and checkpoints stay. Base models cannot be deleted.',
  security,
  ...scoped('fine-tune'),
  request: {
    params: z.object({
      id: z.string().min(1).openapi({ example: 'ft:prometheus-mini:acme:capitals:abc123' }),
    }),
  },
  responses: {
    200: {
      description: 'Deleted.',
      content: {
        'application/json': {
          schema: z.object({ id: z.string(), object: z.literal('model'), deleted: z.boolean() }),
        },
      },
    },
    ...authErrors,
    403: errorResponseOf(
      'Not one of your fine-tuned models (e.g. a base model), or the key lacks the fine-tune scope.',
    ),
    404: errorResponseOf('No such model for this tenant.'),
  },
})

const modelNotFound = (id: string) =>
  new ApiError(404, `The model '${id}' does not exist or you do not have access to it.`, {
    param: 'model',
    code: 'model_not_found',
  })

export function registerModels(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    list,
    h(async (c) =>
      json(c, { object: 'list', data: (await deps.models.list(c.get('key').tenant)).map(toModel) }),
    ),
  )
  app.openapi(
    get,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const m = await deps.models.get(c.get('key').tenant, id)
      if (!m) throw modelNotFound(id)
      return json(c, toModel(m))
    }),
  )
  app.openapi(
    del,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const tenant = c.get('key').tenant
      const m = await deps.models.get(tenant, id)
      if (!m) throw modelNotFound(id)
      if (m.owner !== tenant || m.source !== 'fine-tune')
        throw forbidden(
          `The model '${id}' is not one of your fine-tuned models; only those can be deleted.`,
          'model_not_deletable',
        )
      if (!(await deleteModel(deps.store, id))) throw modelNotFound(id)
      deps.models.invalidate?.()
      c.get('log').info({ model: id }, 'fine-tuned model deleted')
      return json(c, { id, object: 'model' as const, deleted: true })
    }),
  )
}
