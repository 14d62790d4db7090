import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, parseConfig } from './config.js'
import { loadConfig } from './config-node.js'

describe('configuration', () => {
  it('has working defaults for the local profile', () => {
    const c = parseConfig({})
    expect(c.PGPT_PROFILE).toBe('local')
    expect(c.PORT).toBe(8787)
    expect(c.PGPT_DATA_DIR).toBe('./.pgpt')
    expect(c.PGPT_EXECUTION_PROVIDERS).toEqual(['cpu'])
    // Local is for development: webhooks to a receiver on this machine are allowed (README).
    expect(c.PGPT_WEBHOOK_ALLOW_PRIVATE).toBe(true)
    expect(c.PGPT_DEFAULT_MODEL).toBe('prometheus-mini')
  })

  it('allows private webhooks only in the local profile, and lets it refuse them', () => {
    expect(parseConfig({ PGPT_WEBHOOK_ALLOW_PRIVATE: 'false' }).PGPT_WEBHOOK_ALLOW_PRIVATE).toBe(false)
    for (const profile of ['aws', 'cloudflare', 'onprem']) {
      const c = parseConfig({ PGPT_PROFILE: profile })
      expect(c.PGPT_WEBHOOK_ALLOW_PRIVATE, profile).toBe(false)
      // No bundled model is published there: /ready waits for any model unless one is named.
      expect(c.PGPT_DEFAULT_MODEL, profile).toBeUndefined()
    }
    expect(parseConfig({ PGPT_PROFILE: 'onprem', PGPT_DEFAULT_MODEL: 'm' }).PGPT_DEFAULT_MODEL).toBe('m')
  })

  it('coerces numbers, booleans and lists from strings', () => {
    const c = parseConfig({
      PORT: '9000',
      PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
      PGPT_EXECUTION_PROVIDERS: 'TensorRT, cuda ,cpu',
    })
    expect(c.PORT).toBe(9000)
    expect(c.PGPT_WEBHOOK_ALLOW_PRIVATE).toBe(true)
    expect(c.PGPT_EXECUTION_PROVIDERS).toEqual(['tensorrt', 'cuda', 'cpu'])
  })

  it.each([
    ['PORT', 'eighty', /PORT/],
    ['PORT', '70000', /PORT/],
    ['PORT', '-1', /PORT/],
    ['PGPT_WORKERS', '-1', /PGPT_WORKERS/],
    ['PGPT_PROFILE', 'mars', /PGPT_PROFILE/],
    ['PGPT_EXECUTION_PROVIDERS', 'cuda,tpu', /PGPT_EXECUTION_PROVIDERS/],
    ['PGPT_API_KEY', 'sk-123', /PGPT_API_KEY: must look like pgpt_/],
    ['PGPT_SQS_ENDPOINT', 'not a url', /PGPT_SQS_ENDPOINT/],
    ['PGPT_WEBHOOK_SIGNING_KEY', 'short', /PGPT_WEBHOOK_SIGNING_KEY: must be at least 32 characters/],
  ])('rejects a bad %s with an error naming it', (name, value, pattern) => {
    let error: unknown
    try {
      parseConfig({ [name]: value })
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toMatch(pattern)
    expect((error as Error).message).toContain(`got '${value}'`)
  })

  it('checks rules that span variables', () => {
    expect(() => parseConfig({ PGPT_QUEUE: 'sqs' })).toThrow(
      /PGPT_SQS_QUEUE_URL: required when PGPT_QUEUE=sqs/,
    )
    expect(() =>
      parseConfig({ PGPT_QUEUE: 'sqs', PGPT_SQS_QUEUE_URL: 'http://127.0.0.1:9324/000/jobs' }),
    ).toThrow(/PGPT_SQS_DLQ_URL: required when PGPT_QUEUE=sqs/)
    expect(() => parseConfig({ PGPT_STORE: 's3' })).toThrow(/PGPT_S3_BUCKET/)
    expect(() => parseConfig({ PGPT_PROFILE: 'aws', PGPT_WEBHOOK_ALLOW_PRIVATE: '1' })).toThrow(
      /PGPT_WEBHOOK_ALLOW_PRIVATE: may only be true in the local profile/,
    )
  })

  it('reads an optional JSON file, and the environment wins over it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgpt-config-'))
    const file = join(dir, 'pgpt.json')
    writeFileSync(
      file,
      JSON.stringify({ PORT: 9100, PGPT_WORKERS: 3, PGPT_EXECUTION_PROVIDERS: ['cuda', 'cpu'] }),
    )
    const c = loadConfig({ PGPT_CONFIG_FILE: file, PGPT_WORKERS: '2' })
    expect(c.PORT).toBe(9100)
    expect(c.PGPT_WORKERS).toBe(2)
    expect(c.PGPT_EXECUTION_PROVIDERS).toEqual(['cuda', 'cpu'])
  })

  it('names the file when it is missing or not JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgpt-config-'))
    expect(() => loadConfig({ PGPT_CONFIG_FILE: join(dir, 'nope.json') })).toThrow(
      /PGPT_CONFIG_FILE: cannot read/,
    )
    const bad = join(dir, 'bad.json')
    writeFileSync(bad, '{ port: 1')
    expect(() => loadConfig({ PGPT_CONFIG_FILE: bad })).toThrow(/PGPT_CONFIG_FILE: .* is not valid JSON/)
  })
})
