import { afterAll, beforeAll } from 'vitest'
import { testQueue } from '../../test/contracts/queue.js'
import { type SqsServer, startSqsServer } from '../../test/servers/sqs-server.js'
import { createSqsQueue } from './sqs-queue.js'

let server: SqsServer
beforeAll(async () => {
  server = await startSqsServer()
})
afterAll(() => server?.stop())

let n = 0
testQueue({
  name: 'SQS (local-aws-sqs)',
  approximateStats: true,
  make: async (config) => {
    const urls = await server.createQueuePair(`contract-${process.pid}-${++n}`, config)
    const open = async () =>
      createSqsQueue({
        ...urls,
        region: server.region,
        endpoint: server.endpoint,
        credentials: server.credentials,
        ...config,
      })
    return { queues: await open(), connect: open }
  },
})
