/**
 * package.json declares Apache-2.0: the repository ships that licence's text,
 * byte for byte the one at https://www.apache.org/licenses/LICENSE-2.0.txt
 * (its SHA-256 below; the same bytes ship in node_modules/long/LICENSE and
 * node_modules/flatbuffers/LICENSE).
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const ROOT = resolve(import.meta.dirname, '../..')
const APACHE_2_0_SHA256 = 'cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30'

describe('LICENSE', () => {
  it('is the full Apache License 2.0 text that package.json names', () => {
    const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8')) as { license: string }
    expect(pkg.license).toBe('Apache-2.0')
    const file = resolve(ROOT, 'LICENSE')
    expect(existsSync(file), 'LICENSE at the repository root').toBe(true)
    const text = readFileSync(file)
    expect(text.toString('utf8')).toContain('TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION')
    expect(createHash('sha256').update(text).digest('hex')).toBe(APACHE_2_0_SHA256)
  })
})
