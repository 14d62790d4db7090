import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { testQueue } from '../../test/contracts/queue.js'
import { inThread } from '../../test/servers/thread-client.js'
import { HoldLimitError, type QueueWithDeadLetter } from '../ports/queue.js'
import { openLocalQueue } from './local-queue.js'
import { openSqlite } from './sqlite.js'

testQueue({
  name: 'local (SQLite)',
  make: async (config) => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-queue-'))
    const file = join(dir, 'pgpt.db')
    const options = { file, name: 'jobs', ...config }
    return {
      queues: openLocalQueue(options),
      // A second connection on another thread, racing this one for real.
      connect: () =>
        inThread<QueueWithDeadLetter>(import.meta.url, './local-queue.ts', 'openLocalQueue', [options]),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})

describe('local queue: a file written before the hold cap', () => {
  it('gains received_at on open; a delivery received before keeps working, uncapped', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-queue-'))
    const file = join(dir, 'pgpt.db')
    try {
      const db = openSqlite(file)
      db.exec(`CREATE TABLE pgpt_queue_messages (
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL, sent_at INTEGER NOT NULL,
        visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT)`)
      const now = Date.now()
      db.prepare('INSERT INTO pgpt_queue_messages VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        'msg_old',
        'jobs',
        'old',
        now,
        now + 30_000,
        1,
        'msg_old.rh',
      )
      db.close()
      const { queue } = openLocalQueue({
        file,
        name: 'jobs',
        visibilityTimeoutSeconds: 1,
        maxReceiveCount: 5,
        maxHoldSeconds: 2,
      })
      await queue.extend('msg_old.rh', 30) // no receive time known: not refused
      await queue.release('msg_old.rh')
      const [msg] = await queue.receive({ waitTimeSeconds: 1 })
      expect(msg).toMatchObject({ id: 'msg_old', receiveCount: 2 })
      await expect(queue.extend(msg.receiptHandle, 30)).rejects.toBeInstanceOf(HoldLimitError)
      await queue.close?.()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
