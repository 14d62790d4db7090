/**
 * API-key authentication (`Authorization: Bearer pgpt_…`) and scope checks.
 * 401 for a missing, unknown or revoked key; 403 for a missing scope.
 */
import type { MiddlewareHandler } from 'hono'
import { forbidden, unauthorized } from '../../../core/errors.js'
import type { KeyStore, Scope } from '../../../core/ports/key-store.js'
import type { AppEnv } from '../../deps.js'
import { verifyKey } from '../../keys.js'
import type { UnauthenticatedLimit } from '../rate-limit/index.js'

export function bearerToken(header: string | undefined): string | null {
  if (!header) return null
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m ? m[1]! : null
}

/** `unauthenticated`: the per-address limit of requests without a valid key (rate-limit/index.ts). */
export const apiKeyAuth = (o: {
  keys: KeyStore
  unauthenticated?: UnauthenticatedLimit
}): MiddlewareHandler<AppEnv> =>
  async function apiKeyAuth(c, next) {
    await o.unauthenticated?.check(c)
    const token = bearerToken(c.req.header('authorization'))
    if (!token) {
      await o.unauthenticated?.failed(c)
      throw unauthorized(
        "You didn't provide an API key. Provide it in the Authorization header as 'Bearer pgpt_…'.",
        'missing_api_key',
      )
    }
    const key = await verifyKey(o.keys, token)
    if (!key) {
      await o.unauthenticated?.failed(c)
      throw unauthorized('Incorrect API key provided.', 'invalid_api_key')
    }
    c.set('key', key)
    c.set('log', c.get('log').child({ tenant: key.tenant, keyId: key.id }))
    await next()
  }

export const requireScope = (scope: Scope, ...orScopes: Scope[]): MiddlewareHandler<AppEnv> => {
  const anyOf = [scope, ...orScopes]
  return async function requireScope(c, next) {
    const key = c.get('key')
    if (!key) throw unauthorized()
    if (!anyOf.some((s) => key.scopes.includes(s)))
      throw forbidden(`This API key lacks the ${anyOf.map((s) => `'${s}'`).join(' or ')} scope.`)
    await next()
  }
}

/**
 * What a route needs, for its createRoute config: the middleware that enforces
 * it and the `x-required-scope` extension that documents it in /openapi.json
 * (the same value, so the two cannot drift; edge/security.test.ts checks the OpenAPI
 * document against docs/operations.md). `key`: any valid API key; several
 * scopes: any one of them.
 */
export const scoped = (scope: Scope, ...orScopes: Scope[]) => ({
  middleware: [requireScope(scope, ...orScopes)],
  'x-required-scope': [scope, ...orScopes].join(' or '),
})
/** Routes under /v1 that any valid key may call (what they return is the key's tenant's). */
export const anyKey = { 'x-required-scope': 'key' } as const
/** Routes outside /v1, with no API key (health, readiness). */
export const noKey = { 'x-required-scope': 'none' } as const
