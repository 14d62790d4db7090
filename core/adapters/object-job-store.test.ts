/**
 * ObjectJobStore runs the JobStore contract twice:
 * - over FsObjectStore (a folder; conditional puts enforced by lock files),
 *   `connect` opening a second FsObjectStore on the same folder;
 * - over S3ObjectStore against test/servers/s3-server.ts. Plain s3rver ignores
 *   If-None-Match/If-Match, but that server enforces them in front of s3rver
 *   as S3 does (412/404), so the create-once and compare-and-swap paths are
 *   really exercised there too (a client that did not send the headers would
 *   fail the racing tests).
 * Plus: construction refuses a store without conditional puts, and two
 * processes' worth of stores racing on one job over one folder.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { testJobStore } from '../../test/contracts/job-store.js'
import { objectBackends } from '../../test/servers/object-backends.js'
import { IllegalTransitionError } from '../ports/job-store.js'
import { FsObjectStore } from './fs-store.js'
import { ObjectJobStore } from './object-job-store.js'

const backends = objectBackends('objjobs')
testJobStore({
  name: 'objects over FsObjectStore',
  make: backends.overFolder((store) => new ObjectJobStore({ store })),
})
testJobStore({
  name: 'objects over S3ObjectStore (s3rver behind the conditional-write shim)',
  make: backends.overS3((store) => new ObjectJobStore({ store })),
})

describe('ObjectJobStore', () => {
  it('refuses a store that does not enforce conditional puts, naming the reason', () => {
    expect(() => new ObjectJobStore({ store: backends.s3('x/', false) })).toThrow(
      /does not enforce conditional puts/,
    )
  })

  it('two stores over one folder: of many concurrent transitions of one job exactly one wins', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-objrace-'))
    try {
      const a = new ObjectJobStore({ store: new FsObjectStore({ root }) })
      const b = new ObjectJobStore({ store: new FsObjectStore({ root }) })
      for (let round = 0; round < 5; round++) {
        const job = await a.create({ tenant: 't', kind: 'generation', input: { round } })
        const starts = await Promise.allSettled([a, b, a, b].map((s) => s.transition(job.id, 'running')))
        expect(starts.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
        const ends = await Promise.allSettled([
          a.transition(job.id, 'succeeded', { output: 'a' }),
          b.transition(job.id, 'failed', { error: { message: 'b', code: 'b' } }),
        ])
        const won = ends.filter((r) => r.status === 'fulfilled')
        expect(won).toHaveLength(1)
        const lost = ends.find((r) => r.status === 'rejected') as PromiseRejectedResult
        expect(lost.reason).toBeInstanceOf(IllegalTransitionError)
        const final = await b.getById(job.id)
        expect(final?.attempts).toBe(1)
        expect(final).toEqual((won[0] as PromiseFulfilledResult<unknown>).value)
      }
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })

  it('lists past an index entry whose record is missing, keeping the page size', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgpt-objjobs-'))
    try {
      const fs = new FsObjectStore({ root })
      const store = new ObjectJobStore({ store: fs, prefix: 'p' })
      const ids: string[] = []
      for (let i = 0; i < 4; i++) {
        ids.push((await store.create({ tenant: 't', kind: 'k', input: i })).id)
        await new Promise((r) => setTimeout(r, 2))
      }
      await fs.delete(`p/by-id/${ids[2]}`) // as if a record were lost
      const page = await store.list('t', { limit: 2 })
      expect(page.data.map((j) => j.id)).toEqual([ids[3], ids[1]])
      expect(page.hasMore).toBe(true)
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })
})
