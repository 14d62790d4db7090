/**
 * SSRF guard for webhook URLs: a webhook may only reach public addresses.
 * The host is resolved (every address, as `dns.lookup(host, {all: true})`) and
 * refused when ANY address is loopback, private, link-local (cloud metadata
 * 169.254.169.254 included), CGNAT, "this network", multicast, reserved or
 * documentation space — also when written as IPv4-mapped/compatible or NAT64
 * IPv6. The caller then connects to the checked addresses only (send.ts pins
 * them with a custom `lookup`), so a second DNS answer cannot rebind the host.
 * `allowPrivate` (local profile only, PGPT_WEBHOOK_ALLOW_PRIVATE) skips the
 * address check but not the scheme check.
 *
 * References: OWASP SSRF Prevention Cheat Sheet; IANA IPv4/IPv6 Special-Purpose
 * Address Registries (RFC 6890).
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP } from 'node:net'

export interface ResolvedAddress {
  address: string
  family: 4 | 6
}

/** All addresses of a host name (dns.lookup semantics: hosts file, then DNS). */
export type ResolveAll = (hostname: string) => Promise<ResolvedAddress[]>

export const systemResolve: ResolveAll = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => ({
    address: a.address,
    family: a.family === 6 ? 6 : 4,
  }))

export class SsrfError extends Error {
  override readonly name = 'SsrfError'
  constructor(
    message: string,
    readonly url: string,
  ) {
    super(message)
  }
}

const V4_BLOCKS: Array<[string, number, string]> = [
  ['0.0.0.0', 8, 'this-network'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'], // 255.255.255.255 broadcast included
]

const V6_BLOCKS: Array<[string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['100::', 64, 'reserved'], // discard-only
  ['2001:db8::', 32, 'documentation'],
  ['fc00::', 7, 'private'], // unique local
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'private'], // deprecated site-local
  ['ff00::', 8, 'multicast'],
]

function v4ToInt(ip: string): number {
  const p = ip.split('.').map(Number)
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0
}

function v6ToBigInt(ip: string): bigint {
  let s = ip.toLowerCase()
  const zone = s.indexOf('%')
  if (zone >= 0) s = s.slice(0, zone)
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two hextets.
  const dotted = s.match(/(\d+\.\d+\.\d+\.\d+)$/)
  if (dotted) {
    const n = v4ToInt(dotted[1])
    s = `${s.slice(0, -dotted[1].length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined]
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t]
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g || '0', 16)), 0n)
}

function inV4(ip: number, base: string, bits: number): boolean {
  if (bits === 0) return true
  const mask = (0xffffffff << (32 - bits)) >>> 0
  return (ip & mask) >>> 0 === (v4ToInt(base) & mask) >>> 0
}

function inV6(ip: bigint, base: string, bits: number): boolean {
  const shift = BigInt(128 - bits)
  return ip >> shift === v6ToBigInt(base) >> shift
}

function classifyV4(ip: string): string | null {
  const n = v4ToInt(ip)
  for (const [base, bits, name] of V4_BLOCKS) if (inV4(n, base, bits)) return name
  return null
}

/** The special-purpose class an address falls in ('loopback', 'private', ...), or null if it is public. */
export function forbiddenClass(ip: string): string | null {
  const kind = isIP(ip)
  if (kind === 4) return classifyV4(ip)
  if (kind !== 6) return 'invalid'
  const n = v6ToBigInt(ip)
  const embedded = (x: bigint) => {
    const v4 = Number(x & 0xffffffffn)
    return `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`
  }
  // IPv4-mapped ::ffff:0:0/96 and NAT64 64:ff9b::/96 carry an IPv4 address: judge that.
  if (inV6(n, '::ffff:0:0', 96) || inV6(n, '64:ff9b::', 96)) {
    const c = classifyV4(embedded(n))
    return c ? `ipv4-mapped ${c}` : null
  }
  for (const [base, bits, name] of V6_BLOCKS) if (inV6(n, base, bits)) return name
  // Deprecated IPv4-compatible ::a.b.c.d (after :: and ::1 above).
  if (inV6(n, '::', 96)) return 'reserved'
  return null
}

export interface GuardOptions {
  allowPrivate?: boolean
  resolve?: ResolveAll
}

/**
 * Checks a webhook URL and resolves its host. Returns the addresses to connect
 * to; throws SsrfError when the URL or any address is refused.
 */
export async function resolveWebhookTarget(
  url: string,
  options: GuardOptions = {},
): Promise<ResolvedAddress[]> {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new SsrfError('not a valid URL', url)
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new SsrfError(`scheme ${u.protocol} is not allowed`, url)
  if (u.username || u.password) throw new SsrfError('credentials in the URL are not allowed', url)
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  let addresses: ResolvedAddress[]
  const literal = isIP(host)
  if (literal) addresses = [{ address: host, family: literal === 6 ? 6 : 4 }]
  else {
    try {
      addresses = await (options.resolve ?? systemResolve)(host)
    } catch (err) {
      throw Object.assign(new Error(`cannot resolve ${host}: ${(err as Error).message}`), {
        code: 'dns_error',
      })
    }
    if (!addresses.length) throw Object.assign(new Error(`${host} has no address`), { code: 'dns_error' })
  }
  if (options.allowPrivate) return addresses
  for (const a of addresses) {
    const cls = forbiddenClass(a.address)
    if (cls)
      throw new SsrfError(
        `${host} resolves to ${a.address} (${cls}); webhooks may only reach public addresses ` +
          '(private ones are allowed only in the local profile, where PGPT_WEBHOOK_ALLOW_PRIVATE=true is the default; ' +
          'set the environment variable PGPT_WEBHOOK_ALLOW_PRIVATE=true on the workers)',
        url,
      )
  }
  return addresses
}
