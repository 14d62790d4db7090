import { testQueue } from '../../test/contracts/queue.js'
import { memoryQueueWithDeadLetter } from './memory-queue.js'

testQueue({
  name: 'memory',
  make: async (config) => {
    const queues = memoryQueueWithDeadLetter(config.visibilityTimeoutSeconds, config.maxReceiveCount, {
      maxHoldSeconds: config.maxHoldSeconds,
    })
    // A second client in the same isolate shares its memory: the same queues.
    return { queues, connect: async () => queues }
  },
})
