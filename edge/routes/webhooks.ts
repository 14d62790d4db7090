/**
 * GET /v1/webhooks/default/secret: the tenant's webhook signing secret
 * (`whsec_…`), to verify deliveries with any Standard Webhooks library. Every
 * webhook of a tenant is signed with it (core/webhook-secrets.ts derives
 * it from the deployment's signing key, so nothing per tenant is stored).
 */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError } from '../../core/errors.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { scoped } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, security } from './util.js'

const route = createRoute({
  method: 'get',
  path: '/v1/webhooks/default/secret',
  tags: ['Webhooks'],
  summary: "Your tenant's webhook signing secret",
  security,
  ...scoped('admin'),
  responses: {
    200: {
      description: 'The secret.',
      content: {
        'application/json': {
          schema: z.object({ object: z.literal('webhook_secret'), key: z.string().startsWith('whsec_') }),
        },
      },
    },
    ...authErrors,
    503: errorResponseOf('Webhook signing is not configured on this edge.'),
  },
})

export function registerWebhooks(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    route,
    h(async (c) => {
      if (!deps.webhookSecret)
        throw new ApiError(
          503,
          'Webhook signing is not configured on this edge (PGPT_WEBHOOK_SIGNING_KEY).',
          {
            code: 'webhooks_not_configured',
          },
        )
      return json(c, { object: 'webhook_secret', key: await deps.webhookSecret(c.get('key').tenant) })
    }),
  )
}
