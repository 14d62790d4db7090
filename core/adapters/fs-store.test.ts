import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testObjectStore } from '../../test/contracts/object-store.js'
import { FsObjectStore } from './fs-store.js'

testObjectStore({
  name: 'fs (folder)',
  make: async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-store-'))
    return {
      store: new FsObjectStore({ root }),
      connect: async () => new FsObjectStore({ root }),
      cleanup: () => rm(root, { recursive: true, force: true }),
    }
  },
})
