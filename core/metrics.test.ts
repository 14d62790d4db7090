/**
 * The fast inc/observe paths of core/metrics.ts export exactly what
 * prom-client's own paths export, for the same calls: label sets seen again,
 * in another order, numbers as label values, partial label sets, bucket boundaries and values
 * above the last bucket, values added, metrics reset or a label set removed
 * in between; and they refuse what prom-client refuses.
 */
import { describe, expect, it } from 'vitest'
import { createMetrics, type Metrics } from './metrics.js'

const chat = { route: '/v1/chat/completions', method: 'POST', status: '200', model: 'm1' }

function traffic(m: Metrics) {
  for (let i = 0; i < 3; i++) m.requests.inc(chat)
  m.requests.inc({ ...chat, status: 200 as unknown as string }) // the same series as '200'
  m.requests.inc({ ...chat, model: 'm2' }, 5)
  const reordered = { model: 'm1', status: '200', method: 'POST', route: chat.route } // the same series as chat
  for (let i = 0; i < 2; i++) m.requests.inc(reordered)
  m.requests.inc({ ...chat, model: 'm2' }, 0)
  m.requests.inc({ route: '/health', method: 'GET', status: '200' } as typeof chat) // model left out
  m.requests.inc({ route: '/health', method: 'GET', status: '200', model: 'undefined' }) // not the same series
  m.requests.inc({ route: '/health', method: 'GET', status: '200' } as typeof chat)
  for (const s of [0.001, 0.005, 0.3, 0.3, 1000, 0.0049])
    m.requestLatency.observe({ route: chat.route, method: 'POST', status: '200' }, s)
  m.requestLatency.observe({ route: '/v1/models', method: 'GET', status: '200' }, 0.02)
  m.timeToFirstToken.observe({ model: 'm1' }, 0.02)
  m.timeToFirstToken.observe({ model: 'm1' }, 0.5)
  m.cacheLookups.inc({ result: 'hit' })
  m.cacheLookups.inc({ result: 'hit' })
  m.cacheLookups.inc({ result: 'miss' })
  m.webhookAttempts.observe(3)
  m.webhookAttempts.observe(30)
}

const exported = (m: Metrics) => m.registry.metrics()

describe('metrics fast paths', () => {
  it('export what prom-client exports for the same calls', async () => {
    const fast = createMetrics()
    const plain = createMetrics({ fastPaths: false })
    for (const m of [fast, plain]) traffic(m)
    const first = await exported(plain)
    expect(first).toContain(
      'pgpt:http_requests_total{route="/v1/chat/completions",method="POST",status="200",model="m1"} 6',
    )
    expect(await exported(fast)).toBe(first)

    // Reset, a removed label set, then the same traffic twice more.
    for (const m of [fast, plain]) {
      m.registry.resetMetrics()
      traffic(m)
      m.requests.remove(chat)
      m.requestLatency.remove({ route: chat.route, method: 'POST', status: '200' })
      traffic(m)
      traffic(m)
    }
    expect(await exported(fast)).toBe(await exported(plain))
  })

  it('refuses what prom-client refuses', () => {
    const fast = createMetrics()
    fast.requests.inc(chat)
    expect(() => fast.requests.inc(chat, -1)).toThrow(/decrease/)
    expect(() => fast.requests.inc(chat, Number.POSITIVE_INFINITY)).toThrow(/not a valid number/)
    expect(() =>
      fast.requestLatency.observe({ route: 'r', method: 'GET', status: '200' }, Number.NaN),
    ).toThrow()
    expect(() =>
      fast.cacheLookups.inc({ result: 'hit', nope: 'x' } as unknown as { result: string }),
    ).toThrow(/label/)
  })
})
