/**
 * Which webhook URLs a job may name: http(s) only, and no loopback, private,
 * link-local or internal host unless PGPT_WEBHOOK_ALLOW_PRIVATE (local profile).
 * A name that resolves to a private address is the worker's to refuse at
 * delivery time; this is the cheap first gate.
 */

const PRIVATE_V4 = [
  /^127\./,
  /^10\./,
  /^192\.168\./,
  /^172\.(1[6-9]|2\d|3[01])\./,
  /^169\.254\./,
  /^0\./,
  /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./,
]

export function isPrivateHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '')
  if (h === 'localhost' || h.endsWith('.localhost') || h.endsWith('.local') || h.endsWith('.internal'))
    return true
  if (PRIVATE_V4.some((r) => r.test(h))) return true
  if (h.includes(':'))
    return h === '::1' || h === '::' || /^f[cd]/.test(h) || /^fe[89ab]/.test(h) || h.startsWith('::ffff:')
  return false
}

/** How to allow them, so a refusal says what to change (the workers' SSRF guard says the same). */
export const PRIVATE_HINT =
  'allowed only in the local profile, where PGPT_WEBHOOK_ALLOW_PRIVATE=true is the default; set the environment variable PGPT_WEBHOOK_ALLOW_PRIVATE=true on the edge and the workers'

/** Null when allowed, else the reason. */
export function webhookUrlProblem(url: string, allowPrivate: boolean): string | null {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return 'is not a valid URL'
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'must use http or https'
  if (u.username || u.password) return 'must not carry credentials'
  if (!allowPrivate && isPrivateHost(u.hostname))
    return `points to a private or loopback address (${PRIVATE_HINT})`
  return null
}
