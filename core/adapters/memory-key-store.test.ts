import { testKeyStore } from '../../test/contracts/key-store.js'
import { MemoryKeyStore } from './memory-key-store.js'

testKeyStore({
  name: 'memory',
  make: async () => {
    const store = new MemoryKeyStore()
    return { store, connect: async () => store }
  },
})
