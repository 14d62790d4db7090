import { testObjectStore } from '../../test/contracts/object-store.js'
import { MemoryObjectStore } from './memory-object-store.js'

testObjectStore({
  name: 'memory',
  make: async () => {
    const store = new MemoryObjectStore()
    // In memory, "another client" can only be the same objects in this process.
    return { store, connect: async () => store }
  },
})
