import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testUsageStore } from '../../test/contracts/usage-store.js'
import { SqliteUsageStore } from './sqlite-usage-store.js'

testUsageStore({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-usage-'))
    const file = join(dir, 'pgpt.db')
    return {
      store: new SqliteUsageStore({ file }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
