/**
 * `pgpt keys`: API keys of the local profile's key store (<PGPT_DATA_DIR>/pgpt.db).
 *
 *   pgpt keys create --tenant t --scopes generate,admin --name n [--rpm 60] [--tpm 100000]
 *   pgpt keys list [--tenant t] [--json]
 *   pgpt keys revoke <id>
 *
 * The secret is printed once, at creation; only its SHA-256 is stored.
 */
import { defineCommand } from 'citty'
import { loadConfig } from '../core/config-node.js'
import type { ApiKeyRecord, KeyStore } from '../core/ports/key-store.js'
import { openWiring } from '../core/wiring.js'
import { nodeBackends } from '../core/wiring-node.js'
import { createKey, parseScopes } from '../edge/keys.js'

export interface KeysIo {
  open(): Promise<KeyStore>
  out(line: string): void
}

const defaultIo: KeysIo = {
  async open() {
    // The keys the edge of the same configuration reads (SQLite file, or object records).
    const config = loadConfig()
    // Adapters open lazily: of these records only the key store opens anything, and withStore closes it.
    return openWiring(config, nodeBackends(config)).records().keys
  },
  out: (line) => console.log(line),
}

const limit = (v: string | undefined, flag: string) => {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer (got '${v}')`)
  return n
}

const row = (k: ApiKeyRecord) =>
  [
    k.id,
    k.tenant,
    k.name,
    k.scopes.join(','),
    k.display,
    new Date(k.createdAt).toISOString(),
    k.revokedAt ? 'revoked' : 'active',
  ].join('\t')

async function withStore<T>(io: KeysIo, fn: (s: KeyStore) => Promise<T>): Promise<T> {
  const store = await io.open()
  try {
    return await fn(store)
  } finally {
    await store.close?.()
  }
}

export function keysCommand(io: KeysIo = defaultIo) {
  const create = defineCommand({
    meta: { name: 'create', description: 'Create a key; prints the secret once' },
    args: {
      tenant: { type: 'string', required: true, description: 'Tenant the key belongs to' },
      scopes: {
        type: 'string',
        required: true,
        description:
          'Comma list of generate, batch, fine-tune, admin (the tenant), operator (the platform: every tenant)',
      },
      name: { type: 'string', default: 'cli', description: 'A label' },
      rpm: { type: 'string', description: 'Requests per minute for this key (default: PGPT_RATE_LIMIT_RPM)' },
      tpm: { type: 'string', description: 'Tokens per minute for this key (default: PGPT_RATE_LIMIT_TPM)' },
      json: { type: 'boolean', description: 'Print JSON' },
    },
    async run({ args }) {
      const scopes = parseScopes(args.scopes)
      const rpm = limit(args.rpm, 'rpm')
      const tpm = limit(args.tpm, 'tpm')
      const limits =
        rpm || tpm
          ? { ...(rpm ? { requestsPerMinute: rpm } : {}), ...(tpm ? { tokensPerMinute: tpm } : {}) }
          : undefined
      const { secret, record } = await withStore(io, (s) =>
        createKey(s, { tenant: args.tenant, name: args.name, scopes, ...(limits ? { limits } : {}) }),
      )
      if (args.json)
        io.out(JSON.stringify({ id: record.id, tenant: record.tenant, scopes: record.scopes, secret }))
      else {
        io.out(`id:      ${record.id}`)
        io.out(`tenant:  ${record.tenant}`)
        io.out(`scopes:  ${record.scopes.join(',')}`)
        io.out(`secret:  ${secret}`)
        io.out('Store the secret now: it is not shown again.')
      }
      return record
    },
  })
  const list = defineCommand({
    meta: { name: 'list', description: 'List keys (never secrets)' },
    args: {
      tenant: { type: 'string', description: 'Only this tenant' },
      json: { type: 'boolean', description: 'Print JSON' },
    },
    async run({ args }) {
      const keys = await withStore(io, (s) => s.list(args.tenant))
      if (args.json) io.out(JSON.stringify(keys.map(({ hash: _hash, ...k }) => k)))
      else {
        io.out(['id', 'tenant', 'name', 'scopes', 'key', 'created', 'state'].join('\t'))
        for (const k of keys) io.out(row(k))
      }
      return keys
    },
  })
  const revoke = defineCommand({
    meta: { name: 'revoke', description: 'Revoke a key by id' },
    args: { id: { type: 'positional', required: true, description: 'Key id (key_…)' } },
    async run({ args }) {
      const rec = await withStore(io, (s) => s.revoke(args.id, Date.now()))
      if (!rec) throw new Error(`No key with id '${args.id}'.`)
      io.out(`revoked ${rec.id} (${rec.display})`)
      return rec
    },
  })
  return defineCommand({
    meta: { name: 'keys', description: 'Create, list and revoke API keys' },
    subCommands: { create, list, revoke },
  })
}

export default keysCommand()
