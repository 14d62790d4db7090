/**
 * Canonical JSON (object keys sorted, no whitespace, undefined dropped) and
 * its SHA-256: the response cache key of a repeatable request.
 */
import { sha256Hex } from '../keys.js'

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
}

export const canonicalHash = (value: unknown) => sha256Hex(canonicalJson(value))
