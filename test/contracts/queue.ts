/**
 * Contract suite for the Queue port (core/ports/queue.ts). Every adapter's test
 * file calls `testQueue({ name, make })` and nothing else; the suite never
 * skips. Timings use 1 s visibility timeouts, the smallest SQS allows, so the
 * whole suite waits only a few seconds in total.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  HoldLimitError,
  type QueueMessage,
  type QueueStats,
  type QueueWithDeadLetter,
  SQS_MAX_HOLD_SECONDS,
} from '../../core/ports/queue.js'

export interface QueueConfig {
  visibilityTimeoutSeconds: number
  maxReceiveCount: number
  /** The hold cap from a receive (SQS: 43200, fixed); a few seconds in the test that reaches it. */
  maxHoldSeconds?: number
}

export interface MadeQueue {
  /** A fresh, empty queue and its dead-letter queue, configured as asked. */
  queues: QueueWithDeadLetter
  /** A second client of the same queues (another process, as far as the adapter can tell). */
  connect: () => Promise<QueueWithDeadLetter>
  cleanup?: () => Promise<void>
}

export interface QueueContractOptions {
  name: string
  make: (config: QueueConfig) => Promise<MadeQueue>
  /**
   * SQS's counters are approximate (and local-aws-sqs counts in-flight
   * messages in ApproximateNumberOfMessages): the suite then checks that each
   * counter moves, not exact values.
   */
  approximateStats?: boolean
}

const DEFAULTS: QueueConfig = { visibilityTimeoutSeconds: 1, maxReceiveCount: 5 }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - start }
}

async function eventually(check: () => Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await check()
    } catch (err) {
      if (Date.now() > deadline) throw err
      await sleep(100)
    }
  }
}

export function testQueue({ name, make, approximateStats = false }: QueueContractOptions) {
  describe(`Queue contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async (config: Partial<QueueConfig> = {}) => {
      const made = await make({ ...DEFAULTS, ...config })
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => {
        await made.queues.queue.close?.()
        await made.queues.deadLetter.close?.()
      })
      return made
    }
    const connect = async (made: MadeQueue) => {
      const other = await made.connect()
      cleanups.push(async () => {
        await other.queue.close?.()
        await other.deadLetter.close?.()
      })
      return other
    }

    it('sends and receives a message with its id, body, receiveCount and sentAt', async () => {
      const { queues } = await setup()
      expect(queues.maxReceiveCount).toBe(DEFAULTS.maxReceiveCount)
      const before = Date.now()
      const { id } = await queues.queue.send(JSON.stringify({ hello: 'world' }))
      expect(typeof id).toBe('string')
      expect(id.length).toBeGreaterThan(0)
      const [msg, ...rest] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(rest).toEqual([])
      expect(msg).toMatchObject({ id, body: '{"hello":"world"}', receiveCount: 1 })
      expect(typeof msg.receiptHandle).toBe('string')
      // SentTimestamp has ms resolution on SQS; allow a little clock skew.
      expect(msg.sentAt).toBeGreaterThanOrEqual(before - 1000)
      expect(msg.sentAt).toBeLessThanOrEqual(Date.now() + 1000)
    })

    it('hides a received message until its visibility timeout, then redelivers it with a new handle', async () => {
      const { queues } = await setup()
      const { id } = await queues.queue.send('again')
      const [first] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(first.id).toBe(id)
      expect(await queues.queue.receive()).toEqual([])
      const { value, ms } = await timed(() => queues.queue.receive({ waitTimeSeconds: 5 }))
      expect(ms).toBeGreaterThan(500) // not before the 1 s timeout (minus the first receive's time)
      expect(value).toHaveLength(1)
      expect(value[0]).toMatchObject({ id, body: 'again', receiveCount: 2 })
      expect(value[0].receiptHandle).not.toBe(first.receiptHandle)
    })

    it('ack deletes the message for good', async () => {
      const { queues } = await setup()
      await queues.queue.send('done')
      // Visibility 0: were the ack ignored, the message would be visible at once.
      const [msg] = await queues.queue.receive({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 0 })
      await queues.queue.ack(msg.receiptHandle)
      expect(await queues.queue.receive({ waitTimeSeconds: 1 })).toEqual([])
    })

    it('ignores an ack with the handle of an earlier delivery', async () => {
      const { queues } = await setup()
      const { id } = await queues.queue.send('stale')
      const [d1] = await queues.queue.receive({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 0 })
      const [d2] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(d2).toMatchObject({ id, receiveCount: 2 })
      await queues.queue.ack(d1.receiptHandle) // a worker that lost the message: must not delete it
      await queues.queue.release(d2.receiptHandle)
      const [d3] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(d3).toMatchObject({ id, body: 'stale', receiveCount: 3 })
      await queues.queue.ack(d3.receiptHandle)
      expect(await queues.queue.receive()).toEqual([])
    })

    it('release gives a message back at once', async () => {
      const { queues } = await setup({ visibilityTimeoutSeconds: 30 })
      const { id } = await queues.queue.send('back')
      const [d1] = await queues.queue.receive({ waitTimeSeconds: 1 })
      await queues.queue.release(d1.receiptHandle)
      const { value, ms } = await timed(() => queues.queue.receive({ waitTimeSeconds: 2 }))
      expect(ms).toBeLessThan(1500)
      expect(value[0]).toMatchObject({ id, body: 'back', receiveCount: 2 })
    })

    it('extend keeps a message invisible past its original timeout', async () => {
      const { queues } = await setup()
      const { id } = await queues.queue.send('busy')
      const [msg] = await queues.queue.receive({ waitTimeSeconds: 1 })
      await sleep(300)
      await queues.queue.extend(msg.receiptHandle, 3)
      // Without the extension it would reappear about 0.7 s into this poll.
      expect(await queues.queue.receive({ waitTimeSeconds: 1 })).toEqual([])
      await queues.queue.release(msg.receiptHandle)
      const [again] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(again).toMatchObject({ id, receiveCount: 2 })
    })

    it('stamps each delivery with its receive time and reports the hold cap (SQS: 12 hours)', async () => {
      const { queues } = await setup()
      expect(queues.queue.maxHoldSeconds).toBe(SQS_MAX_HOLD_SECONDS)
      await queues.queue.send('stamped')
      const before = Date.now()
      const [msg] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(msg.receivedAt).toBeGreaterThanOrEqual(before - 1000)
      expect(msg.receivedAt).toBeLessThanOrEqual(Date.now())
    })

    it('refuses an extend beyond the hold cap from the receive with HoldLimitError; the delivery stays held', async () => {
      const { queues } = await setup({ maxHoldSeconds: 4 })
      expect(queues.queue.maxHoldSeconds).toBe(4)
      const { id } = await queues.queue.send('long job')
      const [msg] = await queues.queue.receive({ waitTimeSeconds: 1 })
      await queues.queue.extend(msg.receiptHandle, 2) // within the cap
      const beyond = await queues.queue.extend(msg.receiptHandle, 6).then(
        () => null,
        (err: unknown) => err,
      )
      expect(beyond).toBeInstanceOf(HoldLimitError)
      expect((beyond as HoldLimitError).maxHoldSeconds).toBe(4)
      // Refused, not shortened: the 2 s extension still holds the message.
      expect(await queues.queue.receive()).toEqual([])
      // Later, even a short extend crosses the cap: it counts from the receive, not from the last extend.
      await sleep(1500)
      await expect(queues.queue.extend(msg.receiptHandle, 3)).rejects.toBeInstanceOf(HoldLimitError)
      await queues.queue.extend(msg.receiptHandle, 1)
      // A fresh delivery starts a fresh hold.
      await queues.queue.release(msg.receiptHandle)
      const [again] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(again).toMatchObject({ id, receiveCount: 2 })
      await queues.queue.extend(again.receiptHandle, 3)
    })

    it('moves a message to the dead-letter queue after maxReceiveCount receives', async () => {
      const { queues } = await setup({ maxReceiveCount: 2, visibilityTimeoutSeconds: 30 })
      const { id } = await queues.queue.send('poison')
      for (let n = 1; n <= 2; n++) {
        const [msg] = await queues.queue.receive({ waitTimeSeconds: 1 })
        expect(msg).toMatchObject({ id, receiveCount: n })
        await queues.queue.release(msg.receiptHandle)
      }
      expect(await queues.queue.receive({ waitTimeSeconds: 1 })).toEqual([])
      const [dead] = await queues.deadLetter.receive({ waitTimeSeconds: 2 })
      expect(dead).toMatchObject({ id, body: 'poison' })
      expect(dead.receiveCount).toBeGreaterThanOrEqual(1)
      await queues.deadLetter.ack(dead.receiptHandle)
      expect(await queues.deadLetter.receive()).toEqual([])
      expect(await queues.queue.receive()).toEqual([])
    })

    it('keeps the queue and its dead-letter queue apart', async () => {
      const { queues } = await setup()
      await queues.deadLetter.send('only-dead')
      await queues.queue.send('only-live')
      const [live] = await queues.queue.receive({ waitTimeSeconds: 1, maxMessages: 10 })
      const [dead] = await queues.deadLetter.receive({ waitTimeSeconds: 1, maxMessages: 10 })
      expect(live.body).toBe('only-live')
      expect(dead.body).toBe('only-dead')
      expect(await queues.queue.receive()).toEqual([])
      expect(await queues.deadLetter.receive()).toEqual([])
    })

    it('holds back a message sent with delaySeconds', async () => {
      const { queues } = await setup()
      const { id } = await queues.queue.send('later', { delaySeconds: 1 })
      expect(await queues.queue.receive()).toEqual([])
      const { value, ms } = await timed(() => queues.queue.receive({ waitTimeSeconds: 4 }))
      expect(ms).toBeGreaterThan(500)
      expect(value[0]).toMatchObject({ id, body: 'later', receiveCount: 1 })
    })

    it('long-polls: returns as soon as a message arrives', async () => {
      const { queues } = await setup()
      setTimeout(() => void queues.queue.send('arrived'), 250)
      const { value, ms } = await timed(() => queues.queue.receive({ waitTimeSeconds: 10 }))
      expect(value.map((m) => m.body)).toEqual(['arrived'])
      expect(ms).toBeGreaterThanOrEqual(200)
      expect(ms).toBeLessThan(3000)
    })

    it('long-polls: returns empty after waitTimeSeconds', async () => {
      const { queues } = await setup()
      const { value, ms } = await timed(() => queues.queue.receive({ waitTimeSeconds: 1 }))
      expect(value).toEqual([])
      expect(ms).toBeGreaterThanOrEqual(900)
      expect(ms).toBeLessThan(3000)
    })

    it('an aborted signal ends a long poll early', async () => {
      const { queues } = await setup()
      const ac = new AbortController()
      setTimeout(() => ac.abort(), 150)
      const { value, ms } = await timed(() =>
        queues.queue.receive({ waitTimeSeconds: 10, signal: ac.signal }),
      )
      expect(value).toEqual([])
      expect(ms).toBeLessThan(2000)
      const already = await timed(() => queues.queue.receive({ waitTimeSeconds: 10, signal: ac.signal }))
      expect(already.value).toEqual([])
      expect(already.ms).toBeLessThan(500)
    })

    it('returns at most maxMessages per receive and every message once', async () => {
      const { queues } = await setup({ visibilityTimeoutSeconds: 30 })
      const sent = new Set<string>()
      for (let i = 0; i < 5; i++) sent.add((await queues.queue.send(`m${i}`)).id)
      const first = await queues.queue.receive({ maxMessages: 3, waitTimeSeconds: 1 })
      expect(first.length).toBeGreaterThanOrEqual(1)
      expect(first.length).toBeLessThanOrEqual(3)
      const got: QueueMessage[] = [...first]
      for (let i = 0; i < 10 && got.length < 5; i++)
        got.push(...(await queues.queue.receive({ maxMessages: 10, waitTimeSeconds: 1 })))
      expect(got).toHaveLength(5)
      expect(new Set(got.map((m) => m.id))).toEqual(sent)
      expect(got.map((m) => m.body).sort()).toEqual(['m0', 'm1', 'm2', 'm3', 'm4'])
    })

    it('two clients never hold the same message at once', async () => {
      const made = await setup({ visibilityTimeoutSeconds: 30 })
      const other = await connect(made)
      const n = 20
      for (let i = 0; i < n; i++) await made.queues.queue.send(`job-${i}`)
      const seen: string[] = []
      const consume = async (q: QueueWithDeadLetter) => {
        for (let empty = 0; empty < 3 && seen.length < n; ) {
          const batch = await q.queue.receive({ maxMessages: 4, waitTimeSeconds: 1 })
          if (batch.length === 0) empty++
          for (const m of batch) {
            seen.push(m.body)
            await q.queue.ack(m.receiptHandle)
          }
        }
      }
      await Promise.all([consume(made.queues), consume(other)])
      expect(seen).toHaveLength(n)
      expect(new Set(seen).size).toBe(n)
    })

    it('a second client sees the same queue (shared storage)', async () => {
      const made = await setup()
      const other = await connect(made)
      const { id } = await made.queues.queue.send('shared')
      const [msg] = await other.queue.receive({ waitTimeSeconds: 1 })
      expect(msg).toMatchObject({ id, body: 'shared' })
      await made.queues.queue.ack(msg.receiptHandle) // a handle works from any client
      expect(await other.queue.receive({ visibilityTimeoutSeconds: 0 })).toEqual([])
    })

    it('stats count visible, in-flight and delayed messages', async () => {
      const { queues } = await setup({ visibilityTimeoutSeconds: 30 })
      const empty = await queues.queue.stats()
      expect(empty).toMatchObject({ visible: 0, inFlight: 0, delayed: 0 })
      await queues.queue.send('a')
      await queues.queue.send('b')
      await queues.queue.send('c', { delaySeconds: 30 })
      const [held] = await queues.queue.receive({ waitTimeSeconds: 1 })
      expect(held).toBeDefined()
      const check = (s: QueueStats) => {
        if (approximateStats) {
          expect(s.visible).toBeGreaterThanOrEqual(1)
          expect(s.inFlight).toBeGreaterThanOrEqual(1)
          expect(s.delayed).toBeGreaterThanOrEqual(1)
        } else {
          expect(s).toMatchObject({ visible: 1, inFlight: 1, delayed: 1 })
        }
        if (s.oldestAgeSeconds !== undefined) {
          expect(s.oldestAgeSeconds).toBeGreaterThanOrEqual(0)
          expect(s.oldestAgeSeconds).toBeLessThan(60)
        }
      }
      await eventually(async () => check(await queues.queue.stats()))
      await queues.queue.ack(held.receiptHandle)
      await eventually(async () => expect((await queues.queue.stats()).inFlight).toBe(0))
      expect((await queues.deadLetter.stats()).visible).toBe(0)
    })

    it('round-trips bodies exactly: unicode, JSON and 200 KB', async () => {
      const { queues } = await setup()
      const bodies = [
        JSON.stringify({ prompt: 'Grüße, 世界 🚀', n: [1, 2.5, null], nested: { q: '"quoted"\\' } }),
        'line1\nline2\r\n\ttabbed  ',
        'x'.repeat(200 * 1024),
      ]
      for (const b of bodies) await queues.queue.send(b)
      const got: string[] = []
      for (let i = 0; i < 10 && got.length < bodies.length; i++)
        got.push(...(await queues.queue.receive({ maxMessages: 10, waitTimeSeconds: 1 })).map((m) => m.body))
      expect(got.sort()).toEqual([...bodies].sort())
    })

    it('rejects out-of-range options', async () => {
      const { queues } = await setup()
      await expect(queues.queue.send('x', { delaySeconds: 901 })).rejects.toThrow()
      await expect(queues.queue.receive({ maxMessages: 11 })).rejects.toThrow()
      await expect(queues.queue.receive({ waitTimeSeconds: 21 })).rejects.toThrow()
    })
  })
}
