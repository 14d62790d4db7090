/**
 * The floor plan as rules over import specifiers (docs/architecture.md):
 *
 * - edge/ and workers/ never import each other; both import core/ and models/.
 * - core/ and models/ import neither edge/ nor workers/ (they lie below both),
 *   and models/ does not import core/adapters/ (it needs ports at most).
 * - core/ outside core/adapters/ imports no cloud SDK or runtime binding:
 *   core logic depends on ports, adapters sit at the edges.
 * - Product code never imports test scaffolding (test/, any `testing/` folder).
 *
 * Product code is every .ts file outside test/ and bench/ that is not a test
 * (`*.test.ts`). bench/ may use test helpers: it measures, it does not ship.
 */
import { dirname, join, normalize } from 'node:path'

export interface Violation {
  file: string
  specifier: string
  rule: string
}

/** Packages that tie code to one cloud or runtime. */
const CLOUD_SDK =
  /^(@aws-sdk\/|@smithy\/|aws-lambda$|@cloudflare\/|cloudflare:|wrangler$|miniflare$|@google-cloud\/|@azure\/)/

const top = (path: string) => path.split('/')[0] ?? ''
export const isTestFile = (path: string) =>
  /\.test\.ts$/.test(path) || top(path) === 'test' || top(path) === 'bench'

/** The repository path a relative specifier points at, or null for packages. */
export function resolveSpecifier(from: string, specifier: string): string | null {
  if (!specifier.startsWith('.')) return null
  return normalize(join(dirname(from), specifier))
}

/** Violations of the rules by one file's imports. */
export function checkImports(file: string, specifiers: readonly string[]): Violation[] {
  if (isTestFile(file)) return []
  const out: Violation[] = []
  const area = top(file)
  for (const specifier of specifiers) {
    const target = resolveSpecifier(file, specifier)
    const to = target === null ? null : top(target)
    const add = (rule: string) => out.push({ file, specifier, rule })
    if (area === 'edge' && to === 'workers') add('edge/ must not import workers/')
    if (area === 'workers' && to === 'edge') add('workers/ must not import edge/')
    if ((area === 'core' || area === 'models') && (to === 'edge' || to === 'workers'))
      add(`${area}/ lies below edge/ and workers/ and must not import ${to}/`)
    if (area === 'models' && target?.startsWith('core/adapters/'))
      add('models/ must not import core/adapters/ (ports only)')
    if (area === 'core' && !file.startsWith('core/adapters/') && target === null && CLOUD_SDK.test(specifier))
      add('core/ outside core/adapters/ must not import a cloud SDK or runtime')
    if (target !== null && (to === 'test' || /(^|\/)testing\//.test(target)))
      add('product code must not import test scaffolding')
  }
  return out
}
