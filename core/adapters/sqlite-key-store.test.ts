import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testKeyStore } from '../../test/contracts/key-store.js'
import { SqliteKeyStore } from './sqlite-key-store.js'

testKeyStore({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-key-'))
    const file = join(dir, 'pgpt.db')
    return {
      store: new SqliteKeyStore({ file }),
      connect: async () => new SqliteKeyStore({ file }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
