import { describe, expect, it } from 'vitest'
import { ConfigError } from '../core/config.js'
import { parseWorkerSettings } from './settings.js'
import { SVIX_SCHEDULE_MS } from './webhooks/dispatcher.js'

describe('parseWorkerSettings', () => {
  it('defaults', () => {
    const s = parseWorkerSettings({})
    expect(s.PGPT_WORKER_KINDS).toEqual(['generation', 'fine_tune', 'batch'])
    expect(s.PGPT_WORKER_METRICS_PORT).toBeUndefined()
    expect(s.PGPT_WEBHOOK_RETRY_SCHEDULE_MS).toEqual(SVIX_SCHEDULE_MS)
    expect(s.PGPT_HANDLER_MODULES).toEqual([])
    expect(s.PGPT_DEAD_LETTER_INTERVAL_S).toBe(30)
  })

  it('parses lists and numbers; `none` means no production kinds', () => {
    const s = parseWorkerSettings({
      PGPT_WORKER_KINDS: 'none',
      PGPT_WEBHOOK_RETRY_SCHEDULE_MS: '100, 200,300',
      PGPT_WORKER_METRICS_PORT: '0',
      PGPT_HANDLER_MODULES: 'a.ts, b/c.ts',
    })
    expect(s.PGPT_HANDLER_MODULES).toEqual(['a.ts', 'b/c.ts'])
    expect(s.PGPT_WORKER_KINDS).toEqual([])
    expect(s.PGPT_WEBHOOK_RETRY_SCHEDULE_MS).toEqual([100, 200, 300])
    expect(s.PGPT_WORKER_METRICS_PORT).toBe(0)
  })

  it.each([
    ['PGPT_WORKER_KINDS', 'generation,training'],
    ['PGPT_WEBHOOK_RETRY_SCHEDULE_MS', '5,soon'],
    ['PGPT_WORKER_METRICS_PORT', '70000'],
  ])('a bad %s stops start-up naming the variable and the value', (variable, value) => {
    const err = (() => {
      try {
        parseWorkerSettings({ [variable]: value })
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).issues[0].variable).toBe(variable)
    expect((err as ConfigError).message).toContain(`got '${value}'`)
  })
})
