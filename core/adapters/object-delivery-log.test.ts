/**
 * ObjectDeliveryLog runs the DeliveryLog contract over MemoryObjectStore (one
 * store shared by both clients), FsObjectStore (`connect` opens a second
 * FsObjectStore on the same folder) and S3ObjectStore against
 * test/servers/s3-server.ts, which enforces If-None-Match/If-Match in front
 * of s3rver as S3 does, so the claim races really go through compare-and-swap.
 * Plus: stale due entries are dropped, and a store without conditional puts
 * is refused.
 */
import { describe, expect, it } from 'vitest'
import { testDeliveryLog } from '../../test/contracts/delivery-log.js'
import { objectBackends } from '../../test/servers/object-backends.js'
import { MemoryObjectStore } from './memory-object-store.js'
import { ObjectDeliveryLog, ORPHAN_GRACE_MS } from './object-delivery-log.js'

const backends = objectBackends('objdeliveries')
const asLog = <M extends { store: ObjectDeliveryLog }>({ store, ...rest }: M) => ({ log: store, ...rest })

testDeliveryLog({
  name: 'objects over MemoryObjectStore',
  make: async () => {
    const store = new MemoryObjectStore()
    return { log: new ObjectDeliveryLog({ store }), connect: async () => new ObjectDeliveryLog({ store }) }
  },
})
testDeliveryLog({
  name: 'objects over FsObjectStore',
  make: async () => asLog(await backends.overFolder((store) => new ObjectDeliveryLog({ store }))()),
})
testDeliveryLog({
  name: 'objects over S3ObjectStore (s3rver behind the conditional-write shim)',
  make: async () => asLog(await backends.overS3((store) => new ObjectDeliveryLog({ store }))()),
})

describe('ObjectDeliveryLog', () => {
  const d = (id: string) => ({
    id,
    jobId: 'job_1',
    requestId: null,
    tenant: 't',
    event: 'completed' as const,
    url: 'https://example.com/hook',
    payload: '{}',
  })
  const dueKeys = async (store: MemoryObjectStore) =>
    (await store.list('webhooks/due/')).objects.map((o) => o.key)

  it('a delivery that cannot be read does not hold up the ones due after it', async () => {
    const store = new MemoryObjectStore()
    const log = new ObjectDeliveryLog({ store })
    const t = Date.now()
    await log.enqueue(d('msg_bad'), t)
    await store.put('webhooks/deliveries/msg_bad', '{not json')
    await log.enqueue(d('msg_good'), t + 1)
    expect((await log.claimDue(10, 1_000, t + 2)).map((x) => x.id)).toEqual(['msg_good'])
    // Alone, the failure is reported.
    await expect(log.claimDue(10, 1_000, t + 2)).rejects.toThrow(SyntaxError)
  })

  it('refuses a store that does not enforce conditional puts, naming the reason', () => {
    expect(() => new ObjectDeliveryLog({ store: backends.s3('x/', false) })).toThrow(
      /does not enforce conditional puts/,
    )
  })

  it('a pass drops the due entries it finds stale, and leaves a young orphan (an enqueue in flight)', async () => {
    const store = new MemoryObjectStore()
    const log = new ObjectDeliveryLog({ store })
    const t = Date.now()
    await log.enqueue(d('msg_done'), t)
    await log.claimDue(10, 1_000, t)
    await log.recordAttempt('msg_done', { status: 'succeeded', responseCode: 200, error: null }, t + 1)
    await log.enqueue(d('msg_retry'), t)
    await log.claimDue(10, 1_000, t)
    await log.recordAttempt(
      'msg_retry',
      { status: 'pending', responseCode: 500, error: 'HTTP 500', nextAttemptAt: t + 60_000 },
      t + 1,
    )
    // Entries a crash could leave: one of an ended delivery, a delivery's old time, orphans young and old.
    await store.put(`webhooks/due/${String(t).padStart(15, '0')}~msg_done`, '')
    await store.put(`webhooks/due/${String(t + 2).padStart(15, '0')}~msg_retry`, '')
    await store.put(`webhooks/due/${String(t - ORPHAN_GRACE_MS - 1).padStart(15, '0')}~msg_gone`, '')
    await store.put(`webhooks/due/${String(t + 3).padStart(15, '0')}~msg_coming`, '')
    expect(await log.claimDue(10, 1_000, t + 10)).toEqual([])
    expect(await dueKeys(store)).toEqual([
      `webhooks/due/${String(t + 3).padStart(15, '0')}~msg_coming`,
      `webhooks/due/${String(t + 60_000).padStart(15, '0')}~msg_retry`,
    ])
  })
})
