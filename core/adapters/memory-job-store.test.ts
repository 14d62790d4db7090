import { testJobStore } from '../../test/contracts/job-store.js'
import { MemoryJobStore } from './memory-job-store.js'

testJobStore({
  name: 'memory',
  make: async () => {
    const store = new MemoryJobStore()
    // In memory, "another client" can only be the same records in this process.
    return { store, connect: async () => store }
  },
})
