import { describe, expect, it } from 'vitest'
import { createLogger } from './logger.js'

describe('logger', () => {
  it('writes one JSON line per entry with service and context, and redacts secrets', () => {
    const lines: string[] = []
    const log = createLogger({ service: 'edge', destination: { write: (l: string) => lines.push(l) } })
    log.child({ requestId: 'req_1' }).info({ apiKey: 'pgpt_secret', authorization: 'Bearer x' }, 'hello')
    expect(lines).toHaveLength(1)
    const entry = JSON.parse(lines[0]!)
    expect(entry).toMatchObject({ service: 'edge', requestId: 'req_1', msg: 'hello', level: 30 })
    expect(entry.apiKey).toBe('[redacted]')
    expect(entry.authorization).toBe('[redacted]')
    expect(lines[0]).not.toContain('pgpt_secret')
  })

  it('honours the level', () => {
    const lines: string[] = []
    const log = createLogger({
      service: 'w',
      level: 'warn',
      destination: { write: (l: string) => lines.push(l) },
    })
    log.info('dropped')
    log.warn('kept')
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['kept'])
  })
})
