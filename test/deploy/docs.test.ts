/** docs/deploy.md lists every setting: each variable of core/config.ts, workers/settings.ts and deploy/aws/settings.ts has a row. */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { configSchema } from '../../core/config.js'
import { workerSettingsSchema } from '../../workers/settings.js'

const ROOT = resolve(import.meta.dirname, '../..')
const doc = readFileSync(resolve(ROOT, 'docs/deploy.md'), 'utf8')
const rows = new Set([...doc.matchAll(/^\| `([A-Z0-9_]+)` *\|/gm)].map((m) => m[1]))

describe('docs/deploy.md', () => {
  it.each([
    ['core/config.ts', Object.keys(configSchema.shape)],
    ['workers/settings.ts', Object.keys(workerSettingsSchema.shape)],
  ])('has a table row for every variable of %s', (_file, names) => {
    expect(names.filter((n) => !rows.has(n))).toEqual([])
  })

  it('has a row for every deploy-time variable sst.config.ts reads', () => {
    const src = readFileSync(resolve(ROOT, 'deploy/aws/settings.ts'), 'utf8')
    const names = new Set([...src.matchAll(/PGPT_DEPLOY_[A-Z_]+/g)].map((m) => m[0]))
    expect(names.size).toBeGreaterThan(5)
    expect([...names].filter((n) => !rows.has(n))).toEqual([])
  })

  it('documents no variable that does not exist', () => {
    const known = new Set([
      ...Object.keys(configSchema.shape),
      ...Object.keys(workerSettingsSchema.shape),
      'PGPT_CONFIG_FILE',
    ])
    expect([...rows].filter((r) => !known.has(r) && !r.startsWith('PGPT_DEPLOY_'))).toEqual([])
  })
})
