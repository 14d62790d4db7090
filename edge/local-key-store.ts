/**
 * Node only: the local profile's KeyStore, the SQLite adapter at
 * <PGPT_DATA_DIR>/pgpt.db (core/adapters/sqlite-key-store.ts), shared by the
 * edge and `pgpt keys`.
 */
import { join } from 'node:path'
import { SqliteKeyStore } from '../core/adapters/sqlite-key-store.js'
import type { KeyStore } from '../core/ports/key-store.js'

export const localDatabase = (dataDir: string) => join(dataDir, 'pgpt.db')

export function openLocalKeyStore(dataDir: string): KeyStore {
  return new SqliteKeyStore({ file: localDatabase(dataDir) })
}
