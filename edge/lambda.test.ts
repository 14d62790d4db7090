/** functions/api.ts: the same app behind hono/aws-lambda, fed API Gateway v2 events. */
import { describe, expect, it } from 'vitest'
import { handler, lambdaApp } from '../functions/api.js'
import { makeTestEdge } from '../test/helpers/edge-harness.js'

const event = (path: string, headers: Record<string, string> = {}, method = 'GET', body?: string) => ({
  version: '2.0',
  routeKey: '$default',
  rawPath: path,
  rawQueryString: '',
  headers: { host: 'api.example.com', ...headers },
  requestContext: {
    accountId: '1',
    apiId: 'a',
    domainName: 'api.example.com',
    domainPrefix: 'api',
    http: { method, path, protocol: 'HTTP/1.1', sourceIp: '203.0.113.1', userAgent: 'test' },
    requestId: 'r',
    routeKey: '$default',
    stage: '$default',
    time: '',
    timeEpoch: 0,
  },
  body,
  isBase64Encoded: false,
})

describe('the edge on Lambda', () => {
  it('answers /health, a 401 and an authenticated list through the Lambda handler', async () => {
    const t = await makeTestEdge({ worker: false })
    lambdaApp(t.deps)
    const health = (await handler(event('/health') as never)) as {
      statusCode: number
      body: string
      headers: Record<string, string>
    }
    expect(health.statusCode).toBe(200)
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' })
    expect(health.headers['x-request-id']).toMatch(/^req_/)
    const anon = (await handler(event('/v1/models') as never)) as { statusCode: number; body: string }
    expect(anon.statusCode).toBe(401)
    expect(JSON.parse(anon.body).error.code).toBe('missing_api_key')
    const ok = (await handler(
      event('/v1/models', { authorization: `Bearer ${t.keys.generate}` }) as never,
    )) as {
      statusCode: number
      body: string
    }
    expect(ok.statusCode).toBe(200)
    expect(JSON.parse(ok.body).data.map((m: { id: string }) => m.id)).toEqual(['echo-1', 'tiny'])
    await t.close()
  })
})
