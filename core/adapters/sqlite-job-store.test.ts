import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testJobStore } from '../../test/contracts/job-store.js'
import { inThread } from '../../test/servers/thread-client.js'
import { IllegalTransitionError, type JobState, type JobStore } from '../ports/job-store.js'
import { SqliteJobStore } from './sqlite-job-store.js'

testJobStore({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-jobs-'))
    const file = join(dir, 'pgpt.db')
    return {
      store: new SqliteJobStore({ file }),
      // A second connection on another thread, racing this one for real.
      connect: () =>
        inThread<JobStore>(import.meta.url, './sqlite-job-store.ts', 'SqliteJobStore', [{ file }], {
          construct: true,
          revive: (e) =>
            e.name === 'IllegalTransitionError'
              ? new IllegalTransitionError(String(e.jobId), e.from as JobState, e.to as JobState)
              : undefined,
        }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
