/**
 * Node only: the local profile's KeyStore, the SQLite adapter at
 * <PGPT_DATA_DIR>/pgpt.db (core/adapters/sqlite-key-store.ts). Loaded with a
 * variable specifier so this builds before that adapter lands; returns null
 * when it is not in the build.
 */
import { join } from 'node:path'
import type { KeyStore } from '../core/ports/key-store.js'

export async function openLocalKeyStore(dataDir: string): Promise<KeyStore | null> {
  const spec = '../core/adapters/sqlite-key-store.js'
  let mod: Record<string, unknown>
  try {
    mod = (await import(spec)) as Record<string, unknown>
  } catch {
    return null
  }
  const file = join(dataDir, 'pgpt.db')
  const found =
    mod.SqliteKeyStore ?? Object.values(mod).find((v) => typeof v === 'function' && /KeyStore$/.test(v.name))
  if (typeof found === 'function') return new (found as new (o: { file: string }) => KeyStore)({ file })
  const open = Object.entries(mod).find(([k, v]) => /^open.*KeyStore$/.test(k) && typeof v === 'function')
  return open
    ? ((await (open[1] as (o: { file: string }) => KeyStore | Promise<KeyStore>)({ file })) as KeyStore)
    : null
}
