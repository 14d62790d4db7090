import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../../core/logger.js'
import type { AppEnv } from '../../deps.js'
import { requestId, SAFE_REQUEST_ID } from './index.js'

const app = new Hono<AppEnv>()
app.use('*', requestId({ logger: silentLogger }))
app.get('/', (c) => c.text(c.get('requestId')))

describe('requestId', () => {
  it.each([
    ['abc', true],
    ['a.b:c-d_e', true],
    ['x'.repeat(128), true],
    ['x'.repeat(129), false],
    ['', false],
    ['has space', false],
    ['new\nline', false],
    ['<script>', false],
  ])('%j is safe: %s', (id, safe) => {
    expect(SAFE_REQUEST_ID.test(id)).toBe(safe)
  })

  it('keeps a safe caller id and exposes it to handlers', async () => {
    const res = await app.request('/', { headers: { 'x-request-id': 'trace-1' } })
    expect(res.headers.get('x-request-id')).toBe('trace-1')
    expect(await res.text()).toBe('trace-1')
  })

  it('replaces an unsafe or missing one with a fresh id per request', async () => {
    const a = (await app.request('/', { headers: { 'x-request-id': 'bad id' } })).headers.get('x-request-id')
    const b = (await app.request('/')).headers.get('x-request-id')
    expect(a).toMatch(/^req_[0-9a-z]{21}$/)
    expect(b).toMatch(/^req_[0-9a-z]{21}$/)
    expect(a).not.toBe(b)
  })
})
