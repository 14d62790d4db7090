import { describe, expect, it } from 'vitest'
import { PRIVATE_HINT, webhookUrlProblem } from './webhook-url.js'

const PRIVATE = `points to a private or loopback address (${PRIVATE_HINT})`

describe('webhookUrlProblem', () => {
  it.each([
    ['https://hooks.example.com/x', null],
    ['http://hooks.example.com/x', null],
    ['ftp://example.com/x', 'must use http or https'],
    ['not a url', 'is not a valid URL'],
    ['https://user:pw@example.com/', 'must not carry credentials'],
    ['http://localhost:3000/', PRIVATE],
    ['http://127.0.0.1/', PRIVATE],
    ['http://10.1.2.3/', PRIVATE],
    ['http://172.20.0.1/', PRIVATE],
    ['http://172.32.0.1/', null],
    ['http://192.168.1.1/', PRIVATE],
    ['http://169.254.169.254/latest/meta-data', PRIVATE],
    ['http://[::1]/', PRIVATE],
    ['http://[fd00::1]/', PRIVATE],
    ['http://metadata.google.internal/', PRIVATE],
  ])('%s → %s', (url, want) => {
    expect(webhookUrlProblem(url, false)).toBe(want)
  })

  it('a refusal names PGPT_WEBHOOK_ALLOW_PRIVATE and how to set it', () => {
    expect(webhookUrlProblem('http://127.0.0.1:9/hook', false)).toMatch(
      /PGPT_WEBHOOK_ALLOW_PRIVATE=true.*local profile|local profile.*PGPT_WEBHOOK_ALLOW_PRIVATE=true/,
    )
  })

  it('allows private addresses when PGPT_WEBHOOK_ALLOW_PRIVATE', () => {
    expect(webhookUrlProblem('http://127.0.0.1:9/hook', true)).toBeNull()
    expect(webhookUrlProblem('ftp://127.0.0.1/', true)).toBe('must use http or https')
  })
})
