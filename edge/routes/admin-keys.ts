/**
 * Admin routes for API keys of the caller's tenant (admin scope):
 * POST /v1/admin/keys (the secret is shown once), GET /v1/admin/keys,
 * DELETE /v1/admin/keys/{id}. Another tenant's key id is a 404.
 *
 * A tenant's admin grants only tenant scopes and limits up to the defaults
 * the operator set (PGPT_RATE_LIMIT_RPM / PGPT_RATE_LIMIT_TPM), so it cannot
 * lift its own keys past what the deployment allows a tenant; an operator key
 * may grant `operator` and set higher limits.
 */
import { createRoute, z } from '@hono/zod-openapi'
import { ApiError, notFound } from '../../core/errors.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import { type ApiKeyRecord, SCOPES } from '../../core/ports/key-store.js'
import { createKey, hasScope } from '../keys.js'
import { scoped } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const scopes = z.array(z.enum(SCOPES)).min(1)

const keyView = z
  .object({
    id: z.string(),
    object: z.literal('api_key'),
    name: z.string(),
    tenant: z.string(),
    scopes,
    display: z.string(),
    created_at: z.number().int(),
    revoked_at: z.number().int().nullable(),
    limits: z.object({
      requests_per_minute: z.number().nullable(),
      tokens_per_minute: z.number().nullable(),
    }),
  })
  .openapi('ApiKey')

const view = (r: ApiKeyRecord) => ({
  id: r.id,
  object: 'api_key' as const,
  name: r.name,
  tenant: r.tenant,
  scopes: r.scopes,
  display: r.display,
  created_at: Math.floor(r.createdAt / 1000),
  revoked_at: r.revokedAt === undefined ? null : Math.floor(r.revokedAt / 1000),
  limits: {
    requests_per_minute: r.limits?.requestsPerMinute ?? null,
    tokens_per_minute: r.limits?.tokensPerMinute ?? null,
  },
})

const createBody = z
  .object({
    name: z.string().min(1).max(128),
    scopes,
    limits: z
      .object({
        requests_per_minute: z.number().int().min(1).optional(),
        tokens_per_minute: z.number().int().min(1).optional(),
      })
      .optional(),
  })
  .openapi('CreateApiKeyRequest')
type CreateBody = z.infer<typeof createBody>

const create = createRoute({
  method: 'post',
  path: '/v1/admin/keys',
  tags: ['Admin'],
  summary: 'Create an API key for your tenant',
  security,
  ...scoped('admin'),
  request: { body: { required: true, content: { 'application/json': { schema: createBody } } } },
  responses: {
    201: {
      description: 'The key; `secret` is shown only here.',
      content: { 'application/json': { schema: keyView.extend({ secret: z.string() }) } },
    },
    400: errorResponseOf('Invalid request.'),
    ...authErrors,
  },
})

const list = createRoute({
  method: 'get',
  path: '/v1/admin/keys',
  tags: ['Admin'],
  summary: "List your tenant's API keys",
  security,
  ...scoped('admin'),
  responses: {
    200: {
      description: 'The keys (no secrets).',
      content: {
        'application/json': { schema: z.object({ object: z.literal('list'), data: z.array(keyView) }) },
      },
    },
    ...authErrors,
  },
})

const revoke = createRoute({
  method: 'delete',
  path: '/v1/admin/keys/{id}',
  tags: ['Admin'],
  summary: 'Revoke an API key',
  security,
  ...scoped('admin'),
  request: { params: z.object({ id: z.string().min(1).max(128) }) },
  responses: {
    200: {
      description: 'Revoked.',
      content: {
        'application/json': {
          schema: z.object({ id: z.string(), object: z.literal('api_key'), deleted: z.literal(true) }),
        },
      },
    },
    ...authErrors,
    404: errorResponseOf('No such key for this tenant.'),
  },
})

export function registerAdminKeys(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    create,
    h(async (c) => {
      const b = valid<CreateBody>(c, 'json')
      const caller = c.get('key')
      if (!hasScope(caller, 'operator')) {
        if (b.scopes.includes('operator'))
          throw new ApiError(403, "Only an operator key may grant the 'operator' scope; this key lacks it.", {
            param: 'scopes',
            code: 'insufficient_scope',
          })
        const caps = [
          ['requests_per_minute', deps.config.PGPT_RATE_LIMIT_RPM, 'PGPT_RATE_LIMIT_RPM'],
          ['tokens_per_minute', deps.config.PGPT_RATE_LIMIT_TPM, 'PGPT_RATE_LIMIT_TPM'],
        ] as const
        for (const [field, cap, variable] of caps) {
          const asked = b.limits?.[field]
          if (asked !== undefined && asked > cap)
            throw new ApiError(
              403,
              `limits.${field} is ${asked}, above this deployment's tenant limit of ${cap} (${variable}); only an operator key may set a higher one.`,
              { param: `limits.${field}`, code: 'limit_above_tenant_cap' },
            )
        }
      }
      const limits =
        b.limits && (b.limits.requests_per_minute || b.limits.tokens_per_minute)
          ? {
              ...(b.limits.requests_per_minute ? { requestsPerMinute: b.limits.requests_per_minute } : {}),
              ...(b.limits.tokens_per_minute ? { tokensPerMinute: b.limits.tokens_per_minute } : {}),
            }
          : undefined
      const { secret, record } = await createKey(deps.keys, {
        tenant: caller.tenant,
        name: b.name,
        scopes: b.scopes,
        ...(limits ? { limits } : {}),
      })
      c.get('log').info({ newKeyId: record.id, scopes: record.scopes }, 'api key created')
      return json(c, { ...view(record), secret }, 201)
    }),
  )
  app.openapi(
    list,
    h(async (c) => json(c, { object: 'list', data: (await deps.keys.list(c.get('key').tenant)).map(view) })),
  )
  app.openapi(
    revoke,
    h(async (c) => {
      const { id } = valid<{ id: string }>(c, 'param')
      const rec = await deps.keys.get(id)
      if (!rec || rec.tenant !== c.get('key').tenant) throw notFound('api key', id, 'id')
      // The operator's key may sit in a tenant (the bootstrap key's 'default'): that tenant's admin cannot revoke it.
      if (hasScope(rec, 'operator') && !hasScope(c.get('key'), 'operator'))
        throw new ApiError(403, "Only an operator key may revoke a key with the 'operator' scope.", {
          param: 'id',
          code: 'insufficient_scope',
        })
      await deps.keys.revoke(id, Date.now())
      c.get('log').info({ revokedKeyId: id }, 'api key revoked')
      return json(c, { id, object: 'api_key', deleted: true })
    }),
  )
}
