/**
 * The retention sweep over each store and record adapter it meets in a
 * deploy: memory (tests, a Worker without bindings), a folder with the object
 * job records (PGPT_RECORDS=object on one host), and a folder with the SQLite
 * job records (`npm start`). S3 runs in test/deploy/functions-s3.test.ts,
 * through the cleanup Lambda. Plus the sweeper's timer and defaults.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { testRetentionSweep } from '../test/contracts/retention.js'
import { FsObjectStore } from './adapters/fs-store.js'
import { MemoryJobStore } from './adapters/memory-job-store.js'
import { MemoryObjectStore } from './adapters/memory-object-store.js'
import { ObjectJobStore } from './adapters/object-job-store.js'
import { SqliteJobStore } from './adapters/sqlite-job-store.js'
import { parseConfig } from './config.js'
import { createFile, fileContentKey } from './records/files.js'
import { defaultFileExpiresAfterS, retentionPolicy, startSweeper } from './retention.js'

const folder = async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgpt-retention-'))
  return { root, cleanup: () => rm(root, { recursive: true, force: true }) }
}

testRetentionSweep({
  name: 'memory',
  make: async () => ({ store: new MemoryObjectStore(), jobs: new MemoryJobStore() }),
})
testRetentionSweep({
  name: 'FsObjectStore with ObjectJobStore',
  make: async () => {
    const { root, cleanup } = await folder()
    const store = new FsObjectStore({ root })
    return { store, jobs: new ObjectJobStore({ store }), cleanup }
  },
})
testRetentionSweep({
  name: 'FsObjectStore with SqliteJobStore',
  make: async () => {
    const { root, cleanup } = await folder()
    return {
      store: new FsObjectStore({ root: join(root, 'store') }),
      jobs: new SqliteJobStore({ file: join(root, 'pgpt.db') }),
      cleanup,
    }
  },
})

describe('retention settings', () => {
  it('default file expiry per purpose, and the job policy, come from the config', () => {
    const d = parseConfig({})
    expect(defaultFileExpiresAfterS(d, 'batch')).toBe(30 * 86_400)
    expect(defaultFileExpiresAfterS(d, 'batch_output')).toBe(30 * 86_400)
    expect(defaultFileExpiresAfterS(d, 'fine-tune')).toBeNull()
    expect(retentionPolicy(d)).toMatchObject({ jobRetentionDays: 30, keepJobKinds: ['fine_tune'] })
    const c = parseConfig({
      PGPT_BATCH_FILE_RETENTION_DAYS: '0',
      PGPT_FINE_TUNE_FILE_RETENTION_DAYS: '7',
      PGPT_JOB_RETENTION_DAYS: '2',
    })
    expect(defaultFileExpiresAfterS(c, 'batch')).toBeNull()
    expect(defaultFileExpiresAfterS(c, 'fine-tune')).toBe(7 * 86_400)
    expect(retentionPolicy(c).jobRetentionDays).toBe(2)
    expect(() => parseConfig({ PGPT_JOB_RETENTION_DAYS: '-1' })).toThrow(/PGPT_JOB_RETENTION_DAYS/)
  })
})

describe('startSweeper', () => {
  const stops: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const s of stops.splice(0)) await s()
  })

  it('sweeps on its timer with its clock, and keeps going after a failed sweep', async () => {
    const store = new MemoryObjectStore()
    const f = await createFile(
      store,
      't',
      { filename: 'a', purpose: 'batch', content: 'a', expiresAfterS: 3600 },
      0,
    )
    let fail = true
    const flaky = Object.assign(Object.create(store), {
      list: (...a: Parameters<MemoryObjectStore['list']>) => {
        if (fail) {
          fail = false
          throw new Error('store unreachable')
        }
        return store.list(...a)
      },
    }) as MemoryObjectStore
    const warned: string[] = []
    const logger = { info: () => {}, warn: (_o: unknown, m: string) => warned.push(m) } as never
    const sweeper = startSweeper(
      { store: flaky, logger },
      { intervalMs: 20, firstDelayMs: 1, clock: () => 3_600_000 },
    )
    stops.push(() => sweeper.stop())
    const deadline = Date.now() + 5000
    while ((await store.head(fileContentKey('t', f.id))) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10))
    expect(await store.head(fileContentKey('t', f.id))).toBeNull()
    expect(warned).toEqual(['retention sweep failed; the next one retries'])
  })
})
