import { afterAll, beforeAll } from 'vitest'
import { testObjectStore } from '../../test/contracts/object-store.js'
import { type S3Server, s3StoreOf, startS3Server } from '../../test/servers/s3-server.js'

let server: S3Server
beforeAll(async () => {
  server = await startS3Server()
})
afterAll(() => server?.stop())

let n = 0
// Each store gets its own key prefix in the shared bucket, so every test starts empty.
const make = (conditionalPut: boolean) => async () => {
  const prefix = `t${process.pid}-${++n}/`
  const open = async () =>
    // The smallest part S3 allows, so the contract's 5 MiB streams go multipart.
    s3StoreOf(server, { prefix, conditionalPut, partSizeBytes: 5 * 1024 * 1024 })
  return { store: await open(), connect: open }
}

// The test server enforces If-None-Match/If-Match as S3 does (see test/servers/s3-server.ts).
testObjectStore({ name: 'S3 (s3rver), conditional puts on', make: make(true) })
testObjectStore({ name: 'S3 (s3rver), conditional puts off', make: make(false) })
