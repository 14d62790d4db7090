import { describe, expect, it } from 'vitest'
import { forbiddenClass, type ResolveAll, resolveWebhookTarget, SsrfError } from './ssrf.js'

const fake =
  (table: Record<string, string[]>): ResolveAll =>
  async (host) => {
    const list = table[host]
    if (!list) throw new Error('ENOTFOUND')
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
  }

describe('forbiddenClass', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.254', 'cgnat'],
    ['0.0.0.0', 'this-network'],
    ['0.1.2.3', 'this-network'],
    ['224.0.0.251', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'private'],
    ['fd12:3456:789a::1', 'private'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'ipv4-mapped loopback'],
    ['::ffff:7f00:1', 'ipv4-mapped loopback'],
    ['::ffff:169.254.169.254', 'ipv4-mapped link-local'],
    ['::ffff:10.0.0.1', 'ipv4-mapped private'],
    ['64:ff9b::a9fe:a9fe', 'ipv4-mapped link-local'],
  ])('%s is %s', (ip, cls) => {
    expect(forbiddenClass(ip)).toBe(cls)
  })

  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '172.32.0.1',
    '100.128.0.1',
    '192.169.0.1',
    '2606:4700:4700::1111',
    '::ffff:8.8.8.8',
  ])('%s is public', (ip) => {
    expect(forbiddenClass(ip)).toBeNull()
  })
})

describe('resolveWebhookTarget', () => {
  const resolve = fake({
    'hooks.example.com': ['93.184.216.34'],
    'metadata.evil.test': ['169.254.169.254'],
    'mixed.evil.test': ['93.184.216.34', '10.0.0.5'],
    'v6.evil.test': ['::ffff:192.168.0.1'],
  })

  it('returns the checked addresses of a public host', async () => {
    await expect(resolveWebhookTarget('https://hooks.example.com/x', { resolve })).resolves.toEqual([
      { address: '93.184.216.34', family: 4 },
    ])
  })

  it.each([
    ['http://metadata.evil.test/latest', /169\.254\.169\.254 \(link-local\)/],
    ['https://mixed.evil.test/', /10\.0\.0\.5 \(private\)/],
    ['https://v6.evil.test/', /ipv4-mapped private/],
    ['http://127.0.0.1:8080/', /loopback/],
    ['http://[::1]:8080/', /loopback/],
    ['http://[fe80::1]/', /link-local/],
    ['http://0.0.0.0/', /this-network/],
    ['ftp://hooks.example.com/', /scheme ftp/],
    ['https://user:pw@hooks.example.com/', /credentials/],
    ['not a url', /not a valid URL/],
  ])('refuses %s', async (url, why) => {
    const err = await resolveWebhookTarget(url, { resolve }).catch((e) => e)
    expect(err).toBeInstanceOf(SsrfError)
    expect(err.message).toMatch(why)
  })

  it('refuses the real hostname localhost (system resolver)', async () => {
    const err = await resolveWebhookTarget('http://localhost:1234/hook').catch((e) => e)
    expect(err).toBeInstanceOf(SsrfError)
    expect(err.message).toMatch(/loopback/)
    // The refusal says which setting allows it.
    expect(err.message).toContain('PGPT_WEBHOOK_ALLOW_PRIVATE=true')
  })

  it('allowPrivate (local profile) lets loopback through', async () => {
    const got = await resolveWebhookTarget('http://localhost:1234/hook', { allowPrivate: true })
    expect(got.length).toBeGreaterThan(0)
  })

  it('a name that does not resolve is a retryable error, not a refusal', async () => {
    const err = await resolveWebhookTarget('https://nowhere.invalid/', { resolve }).catch((e) => e)
    expect(err).not.toBeInstanceOf(SsrfError)
    expect(err.message).toMatch(/cannot resolve/)
  })
})
