import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testJobStore } from '../../test/contracts/job-store.js'
import { SqliteJobStore } from './sqlite-job-store.js'

testJobStore({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-jobs-'))
    const file = join(dir, 'pgpt.db')
    return {
      store: new SqliteJobStore({ file }),
      connect: async () => new SqliteJobStore({ file }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
