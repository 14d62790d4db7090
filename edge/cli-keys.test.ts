/** cli/keys.ts against an in-memory KeyStore (the SQLite one is the local profile's). */
import { runCommand } from 'citty'
import { describe, expect, it } from 'vitest'
import { keysCommand } from '../cli/keys.js'
import { MemoryKeyStore } from '../core/adapters/memory-key-store.js'
import { verifyKey } from './keys.js'

function setup() {
  const store = new MemoryKeyStore()
  const lines: string[] = []
  const cmd = keysCommand({ open: async () => store, out: (l) => lines.push(l) })
  return { store, lines, run: (...rawArgs: string[]) => runCommand(cmd, { rawArgs }) }
}

describe('pgpt keys', () => {
  it('create prints a working secret once; list never shows it; revoke disables it', async () => {
    const { store, lines, run } = setup()
    await run(
      'create',
      '--tenant',
      'acme',
      '--scopes',
      'generate,admin',
      '--name',
      'ci',
      '--rpm',
      '30',
      '--json',
    )
    const made = JSON.parse(lines.pop()!) as { id: string; secret: string; scopes: string[] }
    expect(made.scopes).toEqual(['generate', 'admin'])
    const rec = await verifyKey(store, made.secret)
    expect(rec).toMatchObject({ tenant: 'acme', name: 'ci', limits: { requestsPerMinute: 30 } })
    await run('list', '--tenant', 'acme')
    expect(lines.join('\n')).toContain(made.id)
    expect(lines.join('\n')).not.toContain(made.secret)
    await run('revoke', made.id)
    expect(lines.at(-1)).toContain(`revoked ${made.id}`)
    expect(await verifyKey(store, made.secret)).toBeNull()
  })

  it('rejects unknown scopes and unknown ids', async () => {
    const { run } = setup()
    await expect(run('create', '--tenant', 'a', '--scopes', 'root')).rejects.toThrow(/unknown scope 'root'/)
    await expect(run('revoke', 'key_missing')).rejects.toThrow(/No key/)
  })
})

describe('pgpt keys on the local SQLite key store', () => {
  it('a key created by one invocation is listed and verified by the next', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { SqliteKeyStore } = await import('../core/adapters/sqlite-key-store.js')
    const { localDbFile } = await import('../core/wiring-node.js')
    const openLocalKeyStore = (dir: string) =>
      new SqliteKeyStore({ file: localDbFile({ PGPT_DATA_DIR: dir }) })
    const dir = mkdtempSync(join(tmpdir(), 'pgpt-keys-'))
    try {
      const lines: string[] = []
      const cmd = keysCommand({ open: async () => openLocalKeyStore(dir), out: (l) => lines.push(l) })
      await runCommand(cmd, { rawArgs: ['create', '--tenant', 'acme', '--scopes', 'generate', '--json'] })
      const { id, secret } = JSON.parse(lines.pop()!) as { id: string; secret: string }
      await runCommand(cmd, { rawArgs: ['list', '--json'] })
      expect((JSON.parse(lines.pop()!) as { id: string }[]).map((k) => k.id)).toEqual([id])
      const store = openLocalKeyStore(dir)
      expect((await verifyKey(store, secret))?.tenant).toBe('acme')
      await store.close?.()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
