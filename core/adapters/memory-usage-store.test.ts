import { testUsageStore } from '../../test/contracts/usage-store.js'
import { MemoryUsageStore } from './memory-usage-store.js'

testUsageStore({
  name: 'memory',
  make: async () => ({ store: new MemoryUsageStore() }),
})
