import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testDeliveryLog } from '../../test/contracts/delivery-log.js'
import { SqliteDeliveryLog } from './sqlite-delivery-log.js'

testDeliveryLog({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-deliveries-'))
    const file = join(dir, 'pgpt.db')
    return {
      log: new SqliteDeliveryLog({ file }),
      connect: async () => new SqliteDeliveryLog({ file }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})
