/**
 * The two backends an object-record store (core/adapters/object-*-store.ts)
 * runs its port's contract over: a folder (FsObjectStore; a second client is
 * a second FsObjectStore on the same folder) and S3 (our S3 adapter against
 * test/servers/s3-server.ts behind its conditional-write shim, started once
 * for the test file; each suite run gets its own key prefix). Call at the top
 * of a test file: it registers the server's beforeAll/afterAll.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import { type S3Server, s3StoreOf, startS3Server } from './s3-server.js'

export function objectBackends(tag: string) {
  let server: S3Server | undefined
  beforeAll(async () => {
    server = await startS3Server()
  })
  afterAll(() => server?.stop())
  let n = 0
  /** A client of the test S3 server under `prefix` (`conditionalPut: false` for a store that does not enforce them). */
  const s3 = (prefix: string, conditionalPut = true) => {
    if (!server) throw new Error('the S3 server starts in beforeAll: call s3() from a test')
    return s3StoreOf(server, { prefix, conditionalPut })
  }
  return {
    s3,
    /** `make` of a contract suite over a fresh folder. */
    overFolder:
      <S>(open: (store: ObjectStore) => S) =>
      async () => {
        const root = await mkdtemp(join(tmpdir(), `pgpt-${tag}-`))
        const connect = async () => open(new FsObjectStore({ root }))
        return { store: await connect(), connect, cleanup: () => rm(root, { recursive: true, force: true }) }
      },
    /** `make` of a contract suite over a fresh prefix of the S3 server. */
    overS3:
      <S>(open: (store: ObjectStore) => S) =>
      async () => {
        const prefix = `${tag}${process.pid}-${++n}/`
        const connect = async () => open(s3(prefix))
        return { store: await connect(), connect }
      },
  }
}
