import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testQueue } from '../../test/contracts/queue.js'
import { openLocalQueue } from './local-queue.js'

testQueue({
  name: 'local (SQLite)',
  make: async (config) => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-queue-'))
    const file = join(dir, 'pgpt.db')
    const open = async () => openLocalQueue({ file, name: 'jobs', ...config })
    return { queues: await open(), connect: open, cleanup: () => rm(dir, { recursive: true, force: true }) }
  },
})
