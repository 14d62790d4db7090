/** GET /v1/models and GET /v1/models/{id}: the models this tenant may call. */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError } from '../../core/errors.js'
import type { ModelManifest } from '../../core/model-manifest.js'
import { authErrors, errorResponseOf } from '../generation/schemas.js'
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
  request: { params: z.object({ id: z.string().min(1).openapi({ example: 'prometheus-mini' }) }) },
  responses: {
    200: { description: 'The model.', content: { 'application/json': { schema: model } } },
    ...authErrors,
    404: errorResponseOf('No such model for this tenant.'),
  },
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
      if (!m)
        throw new ApiError(404, `The model '${id}' does not exist or you do not have access to it.`, {
          param: 'model',
          code: 'model_not_found',
        })
      return json(c, toModel(m))
    }),
  )
}
