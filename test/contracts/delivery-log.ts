/**
 * Contract suite for the DeliveryLog port (core/ports/delivery-log.ts). Every
 * adapter's test file calls `testDeliveryLog({ name, make })`; the suite never
 * skips. Times are passed explicitly (from a base near now), so leases and
 * schedules are checked without waiting.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { DeliveryLog, NewDelivery } from '../../core/ports/delivery-log.js'

export interface MadeDeliveryLog {
  /** A fresh, empty log. */
  log: DeliveryLog
  /** A second client of the same log (another process or pod, as far as the adapter can tell). */
  connect: () => Promise<DeliveryLog>
  cleanup?: () => Promise<void>
}

export interface DeliveryLogContractOptions {
  name: string
  make: () => Promise<MadeDeliveryLog>
}

const LEASE = 40_000

const delivery = (id: string, over: Partial<NewDelivery> = {}): NewDelivery => ({
  id,
  jobId: 'job_1',
  requestId: 'req_1',
  tenant: 'tenant_a',
  event: 'completed',
  url: 'https://example.com/hook',
  payload: '{"id":"job_1","status":"succeeded","text":"ünïcode ✓"}',
  ...over,
})

export function testDeliveryLog({ name, make }: DeliveryLogContractOptions) {
  describe(`DeliveryLog contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.log.close?.())
      const connect = async () => {
        const other = await made.connect()
        cleanups.push(async () => other.close?.())
        return other
      }
      return { log: made.log, connect }
    }

    it('adds a delivery once per id, pending and due at once, with every field', async () => {
      const { log } = await setup()
      const t = Date.now()
      expect(await log.enqueue(delivery('msg_a'), t)).toBe(true)
      expect(await log.enqueue(delivery('msg_a', { payload: '{"other":1}' }), t + 5)).toBe(false)
      expect(await log.get('msg_a')).toEqual({
        ...delivery('msg_a'),
        attempt: 0,
        status: 'pending',
        responseCode: null,
        lastError: null,
        nextAttemptAt: t,
        createdAt: t,
        updatedAt: t,
      })
      expect(await log.get('msg_missing')).toBeNull()
      expect(await log.nextDueAt()).toBe(t)
    })

    it('claims only due deliveries, leases them, and gives a lease that ended to the next claim', async () => {
      const { log } = await setup()
      const t = Date.now()
      await log.enqueue(delivery('msg_now'), t)
      await log.enqueue(delivery('msg_later'), t + 10_000)
      const first = await log.claimDue(10, LEASE, t + 1)
      expect(first.map((d) => [d.id, d.status, d.nextAttemptAt])).toEqual([
        ['msg_now', 'delivering', t + 1 + LEASE],
      ])
      // Leased: no second claim before the lease ends.
      expect(await log.claimDue(10, LEASE, t + 20_000)).toEqual([
        expect.objectContaining({ id: 'msg_later', status: 'delivering' }),
      ])
      expect(await log.claimDue(10, LEASE, t + 30_000)).toEqual([])
      // The lease ended without a recorded attempt (a dispatcher died mid-attempt): due again.
      const again = await log.claimDue(10, LEASE, t + 1 + LEASE)
      expect(again.map((d) => [d.id, d.attempt])).toEqual([['msg_now', 0]])
    })

    it('claims at most `limit`, the earliest due', async () => {
      const { log } = await setup()
      const t = Date.now()
      for (let i = 0; i < 5; i++) await log.enqueue(delivery(`msg_${i}`, { jobId: `job_${i}` }), t + (5 - i))
      const got = await log.claimDue(2, LEASE, t + 10)
      expect(got.map((d) => d.id).sort()).toEqual(['msg_3', 'msg_4'])
      expect((await log.claimDue(10, LEASE, t + 10)).map((d) => d.id).sort()).toEqual([
        'msg_0',
        'msg_1',
        'msg_2',
      ])
    })

    it('records attempts: a retry is due at its time, an ended delivery never again', async () => {
      const { log } = await setup()
      const t = Date.now()
      await log.enqueue(delivery('msg_r'), t)
      await log.claimDue(10, LEASE, t)
      await log.recordAttempt(
        'msg_r',
        { status: 'pending', responseCode: 500, error: 'HTTP 500', nextAttemptAt: t + 5_000 },
        t + 100,
      )
      expect(await log.get('msg_r')).toMatchObject({
        attempt: 1,
        status: 'pending',
        responseCode: 500,
        lastError: 'HTTP 500',
        nextAttemptAt: t + 5_000,
        updatedAt: t + 100,
      })
      expect(await log.nextDueAt()).toBeLessThanOrEqual(t + 5_000)
      expect(await log.claimDue(10, LEASE, t + 4_999)).toEqual([])
      const [retry] = await log.claimDue(10, LEASE, t + 5_000)
      expect(retry).toMatchObject({ id: 'msg_r', attempt: 1, payload: delivery('msg_r').payload })
      await log.recordAttempt('msg_r', { status: 'succeeded', responseCode: 204, error: null }, t + 5_100)
      expect(await log.get('msg_r')).toMatchObject({ attempt: 2, status: 'succeeded', responseCode: 204 })
      expect(await log.claimDue(10, LEASE, t + 10 * LEASE)).toEqual([])
      expect(await log.claim('msg_r', LEASE, t + 10 * LEASE)).toBeNull()
    })

    it('claims one delivery by id only while it is due', async () => {
      const { log } = await setup()
      const t = Date.now()
      await log.enqueue(delivery('msg_one'), t)
      expect(await log.claim('msg_one', LEASE, t - 1)).toBeNull()
      expect(await log.claim('msg_one', LEASE, t)).toMatchObject({
        status: 'delivering',
        nextAttemptAt: t + LEASE,
      })
      expect(await log.claim('msg_one', LEASE, t + 1)).toBeNull()
      expect(await log.claim('msg_unknown', LEASE, t)).toBeNull()
      expect(await log.claimDue(10, LEASE, t + 1)).toEqual([])
    })

    it('another client claims what one scheduled, with the same bytes', async () => {
      const { log, connect } = await setup()
      const other = await connect()
      const t = Date.now()
      await log.enqueue(delivery('msg_x'), t)
      await log.claimDue(10, LEASE, t)
      await log.recordAttempt(
        'msg_x',
        { status: 'pending', responseCode: null, error: 'ECONNREFUSED', nextAttemptAt: t + 3_600_000 },
        t,
      )
      expect(await other.claimDue(10, LEASE, t + 3_599_999)).toEqual([])
      const [d] = await other.claimDue(10, LEASE, t + 3_600_000)
      expect(d).toMatchObject({ ...delivery('msg_x'), attempt: 1, status: 'delivering' })
    })

    it('two clients claiming at once never both get one delivery', async () => {
      const { log, connect } = await setup()
      const other = await connect()
      const t = Date.now()
      const ids = Array.from({ length: 6 }, (_, i) => `msg_race${i}`)
      for (const id of ids) await log.enqueue(delivery(id), t)
      const claims = await Promise.all(
        [log, other, log, other]
          .map((l) => l.claimDue(3, LEASE, t + 1))
          .concat(
            ids
              .slice(0, 3)
              .map((id, i) => (i % 2 ? log : other).claim(id, LEASE, t + 1).then((d) => (d ? [d] : []))),
          ),
      )
      const claimed = claims.flat().map((d) => d.id)
      expect(new Set(claimed).size).toBe(claimed.length)
      // Whatever the races left unclaimed is still due to the next pass; nothing is lost.
      const rest = await log.claimDue(10, LEASE, t + 2)
      expect([...claimed, ...rest.map((d) => d.id)].sort()).toEqual(ids)
    })

    it('lists a job’s deliveries oldest first', async () => {
      const { log } = await setup()
      const t = Date.now()
      await log.enqueue(delivery('msg_b', { event: 'output' }), t + 1)
      await log.enqueue(delivery('msg_a', { event: 'start' }), t)
      await log.enqueue(delivery('msg_c', { jobId: 'job_2' }), t)
      expect((await log.listByJob('job_1')).map((d) => [d.id, d.event])).toEqual([
        ['msg_a', 'start'],
        ['msg_b', 'output'],
      ])
      expect(await log.listByJob('job_none')).toEqual([])
    })

    it('prunes ended deliveries last updated before the cutoff, keeping the rest', async () => {
      const { log } = await setup()
      const t = Date.now()
      for (const id of ['msg_old', 'msg_new', 'msg_open']) await log.enqueue(delivery(id), t)
      await log.claimDue(10, LEASE, t)
      await log.recordAttempt('msg_old', { status: 'failed', responseCode: 410, error: 'HTTP 410' }, t + 10)
      await log.recordAttempt('msg_new', { status: 'succeeded', responseCode: 200, error: null }, t + 1_000)
      await log.recordAttempt(
        'msg_open',
        { status: 'pending', responseCode: 503, error: 'HTTP 503', nextAttemptAt: t + 50 },
        t + 20,
      )
      expect(await log.prune(t + 500)).toBe(1)
      expect(await log.get('msg_old')).toBeNull()
      expect(await log.get('msg_new')).not.toBeNull()
      expect(await log.get('msg_open')).not.toBeNull()
      expect((await log.listByJob('job_1')).map((d) => d.id).sort()).toEqual(['msg_new', 'msg_open'])
      expect(await log.nextDueAt()).not.toBeNull()
    })

    it('has nothing due when empty', async () => {
      const { log } = await setup()
      expect(await log.nextDueAt()).toBeNull()
      expect(await log.claimDue(10, LEASE)).toEqual([])
      expect(await log.prune(Date.now())).toBe(0)
    })
  })
}
