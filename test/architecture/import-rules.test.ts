/**
 * The import rules of the floor plan (test/architecture/import-rules.ts),
 * checked over every TypeScript file the repository tracks. Imports are read
 * with TypeScript's own pre-processor (static imports, re-exports, dynamic
 * `import('…')` with a literal), so a commented-out import does not count and
 * a dynamic one does.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'
import { checkImports, type Violation } from './import-rules.js'

const ROOT = resolve(import.meta.dirname, '../..')

const specifiersOf = (text: string) =>
  ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName)

function trackedTs(): string[] {
  return execFileSync('git', ['ls-files', '-co', '--exclude-standard', '*.ts'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((f) => f && !f.startsWith('node_modules/') && !f.endsWith('.d.ts'))
}

describe('the import rules', () => {
  it('hold for every file in the repository', () => {
    const files = trackedTs()
    expect(files.length).toBeGreaterThan(200)
    const violations: Violation[] = []
    for (const f of files) {
      let text: string
      try {
        text = readFileSync(resolve(ROOT, f), 'utf8')
      } catch {
        continue // deleted in the work tree, not yet in the index
      }
      violations.push(...checkImports(f, specifiersOf(text)))
    }
    expect(violations).toEqual([])
  })

  it('catch each kind of violation', () => {
    const rules = (file: string, src: string) => checkImports(file, specifiersOf(src)).map((v) => v.rule)
    expect(rules('edge/routes/x.ts', "import { a } from '../../workers/worker-loop.js'")).toEqual([
      'edge/ must not import workers/',
    ])
    expect(rules('workers/batches/x.ts', "export { b } from '../../edge/app.js'")).toEqual([
      'workers/ must not import edge/',
    ])
    expect(rules('workers/x.ts', "const m = await import('../edge/app.js')")).toEqual([
      'workers/ must not import edge/',
    ])
    expect(rules('models/byo/x.ts', "import '../../workers/generation/decoder.js'")).toEqual([
      'models/ lies below edge/ and workers/ and must not import workers/',
    ])
    expect(rules('core/records/x.ts', "import { S3Client } from '@aws-sdk/client-s3'")).toEqual([
      'core/ outside core/adapters/ must not import a cloud SDK or runtime',
    ])
    expect(rules('core/adapters/s3-store.ts', "import { S3Client } from '@aws-sdk/client-s3'")).toEqual([])
    expect(rules('workers/x.ts', "import { handlers } from '../test/helpers/test-handlers.js'")).toEqual([
      'product code must not import test scaffolding',
    ])
    expect(rules('edge/x.ts', "import { h } from './testing/harness.js'")).toEqual([
      'product code must not import test scaffolding',
    ])
    // Tests and benchmarks may reach anything; a comment is not an import.
    expect(rules('edge/app.test.ts', "import { w } from '../workers/worker-loop.js'")).toEqual([])
    expect(rules('bench/x.ts', "import { h } from '../test/helpers/edge-harness.js'")).toEqual([])
    expect(rules('edge/x.ts', "// import { w } from '../workers/worker-loop.js'")).toEqual([])
  })
})
