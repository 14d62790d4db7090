import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testQueue } from '../../test/contracts/queue.js'
import { inThread } from '../../test/servers/thread-client.js'
import type { QueueWithDeadLetter } from '../ports/queue.js'
import { openLocalQueue } from './local-queue.js'

testQueue({
  name: 'local (SQLite)',
  make: async (config) => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-queue-'))
    const file = join(dir, 'pgpt.db')
    const options = { file, name: 'jobs', ...config }
    return {
      queues: openLocalQueue(options),
      // A second connection on another thread, racing this one for real.
      connect: () =>
        inThread<QueueWithDeadLetter>(import.meta.url, './local-queue.ts', 'openLocalQueue', [options]),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
