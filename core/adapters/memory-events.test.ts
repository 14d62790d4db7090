import { testEvents } from '../../test/contracts/events.js'
import { MemoryEvents } from './memory-events.js'

testEvents({ name: 'memory', make: async () => ({ events: new MemoryEvents() }) })
