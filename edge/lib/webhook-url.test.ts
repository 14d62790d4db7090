import { describe, expect, it } from 'vitest'
import { webhookUrlProblem } from './webhook-url.js'

describe('webhookUrlProblem', () => {
  it.each([
    ['https://hooks.example.com/x', null],
    ['http://hooks.example.com/x', null],
    ['ftp://example.com/x', 'must use http or https'],
    ['not a url', 'is not a valid URL'],
    ['https://user:pw@example.com/', 'must not carry credentials'],
    ['http://localhost:3000/', 'points to a private or loopback address'],
    ['http://127.0.0.1/', 'points to a private or loopback address'],
    ['http://10.1.2.3/', 'points to a private or loopback address'],
    ['http://172.20.0.1/', 'points to a private or loopback address'],
    ['http://172.32.0.1/', null],
    ['http://192.168.1.1/', 'points to a private or loopback address'],
    ['http://169.254.169.254/latest/meta-data', 'points to a private or loopback address'],
    ['http://[::1]/', 'points to a private or loopback address'],
    ['http://[fd00::1]/', 'points to a private or loopback address'],
    ['http://metadata.google.internal/', 'points to a private or loopback address'],
  ])('%s → %s', (url, want) => {
    expect(webhookUrlProblem(url, false)).toBe(want)
  })

  it('allows private addresses when PGPT_WEBHOOK_ALLOW_PRIVATE', () => {
    expect(webhookUrlProblem('http://127.0.0.1:9/hook', true)).toBeNull()
    expect(webhookUrlProblem('ftp://127.0.0.1/', true)).toBe('must use http or https')
  })
})
