import { Counter, Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { startWorkerServer } from './http-server.js'

describe('worker /metrics and /health', () => {
  let close: (() => Promise<void>) | undefined
  afterEach(async () => close?.())

  it('serves metrics behind the bearer token and health that turns 503 while draining', async () => {
    const registry = new Registry()
    new Counter({ name: 'pgpt:test_total', help: 'x', registers: [registry] }).inc(3)
    let ok = true
    const server = await startWorkerServer({
      port: 0,
      host: '127.0.0.1',
      registry,
      metricsToken: 'metrics-secret',
      health: () => ({ ok, status: ok ? 'ok' : 'draining' }),
    })
    close = server.close
    const base = `http://127.0.0.1:${server.port}`
    expect((await fetch(`${base}/metrics`)).status).toBe(401)
    expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
    const res = await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer metrics-secret' } })
    expect(res.status).toBe(200)
    expect(await res.text()).toMatch(/^pgpt:test_total 3$/m)
    expect(await (await fetch(`${base}/health`)).json()).toEqual({ ok: true, status: 'ok' })
    ok = false
    const draining = await fetch(`${base}/health`)
    expect(draining.status).toBe(503)
    expect(await draining.json()).toEqual({ ok: false, status: 'draining' })
    expect((await fetch(`${base}/nope`)).status).toBe(404)
  })
})
