/**
 * Contract suite for the Events port. Every adapter's test file calls
 * `testEvents({ name, make })` and nothing else; the suite never skips.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { type Events, FINAL_SEQ, type JobEvent } from '../../core/ports/events.js'

export interface EventsContractOptions {
  name: string
  make: () => Promise<{ events: Events; cleanup?: () => Promise<void> }>
}

const ev = (
  jobId: string,
  seq: number,
  type: JobEvent['type'] = 'token',
  data: unknown = { seq },
  run = 1,
): JobEvent => ({
  jobId,
  run,
  seq,
  type,
  data,
  at: Date.now(),
})

async function collect(it: AsyncIterable<JobEvent>, max = 1000): Promise<JobEvent[]> {
  const out: JobEvent[] = []
  for await (const e of it) {
    out.push(e)
    if (out.length >= max) break
  }
  return out
}

export function testEvents({ name, make }: EventsContractOptions) {
  describe(`Events contract: ${name}`, () => {
    let cleanup: (() => Promise<void>) | undefined
    afterEach(async () => {
      await cleanup?.()
      cleanup = undefined
    })
    const setup = async () => {
      const made = await make()
      cleanup = made.cleanup
      return made.events
    }

    it('delivers live events in order and ends at the terminal event', async () => {
      const events = await setup()
      const got = collect(events.subscribe('job_a'))
      for (let i = 1; i <= 5; i++) await events.publish(ev('job_a', i))
      await events.publish(ev('job_a', 6, 'completed'))
      await events.publish(ev('job_a', 7, 'token')) // after the end: not seen
      const list = await got
      expect(list.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6])
      expect(list.at(-1)?.type).toBe('completed')
    })

    it('replays events published before the subscriber arrived, after a given position', async () => {
      const events = await setup()
      for (let i = 1; i <= 3; i++) await events.publish(ev('job_b', i))
      await events.publish(ev('job_b', 4, 'failed', { message: 'boom' }))
      expect((await collect(events.subscribe('job_b'))).map((e) => e.seq)).toEqual([1, 2, 3, 4])
      expect(
        (await collect(events.subscribe('job_b', { after: { run: 1, seq: 2 } }))).map((e) => e.seq),
      ).toEqual([3, 4])
    })

    it('keeps jobs apart and ignores a repeated seq (redelivered job)', async () => {
      const events = await setup()
      const a = collect(events.subscribe('job_c'))
      const b = collect(events.subscribe('job_d'))
      await events.publish(ev('job_c', 1))
      await events.publish(ev('job_d', 1))
      await events.publish(ev('job_c', 1)) // duplicate
      await events.publish(ev('job_c', 2, 'completed'))
      await events.publish(ev('job_d', 2, 'canceled'))
      expect((await a).map((e) => `${e.jobId}:${e.seq}`)).toEqual(['job_c:1', 'job_c:2'])
      expect((await b).map((e) => `${e.jobId}:${e.seq}`)).toEqual(['job_d:1', 'job_d:2'])
    })

    // A redelivered job: run 1's worker lost its lease, run 2 publishes from seq 1 again.
    const runs = (list: JobEvent[]) => list.map((e) => `${e.run}:${e.seq}:${e.type}`)

    it('delivers a newer run’s events after the older run’s, and drops the older run’s late ones', async () => {
      const events = await setup()
      const live = collect(events.subscribe('job_r'))
      await events.publish(ev('job_r', 1, 'start', {}, 1))
      await events.publish(ev('job_r', 2, 'token', { text: 'a' }, 1))
      await events.publish(ev('job_r', 3, 'token', { text: 'b' }, 1))
      await events.publish(ev('job_r', 1, 'start', {}, 2))
      await events.publish(ev('job_r', 4, 'token', { text: 'late' }, 1)) // run 1, fenced: dropped
      await events.publish(ev('job_r', 2, 'token', { text: 'a' }, 2))
      await events.publish(ev('job_r', 2, 'token', { text: 'again' }, 2)) // repeated seq
      await events.publish(ev('job_r', 5, 'completed', { text: 'late' }, 1)) // run 1: dropped
      await events.publish(ev('job_r', 3, 'completed', { text: 'a' }, 2))
      expect(runs(await live)).toEqual([
        '1:1:start',
        '1:2:token',
        '1:3:token',
        '2:1:start',
        '2:2:token',
        '2:3:completed',
      ])
      // Replay keeps the newest run only: a late subscriber sees the job as if it ran once.
      expect(runs(await collect(events.subscribe('job_r')))).toEqual([
        '2:1:start',
        '2:2:token',
        '2:3:completed',
      ])
      // Resuming from a position in run 1 continues with run 2; from one in run 2, after it.
      expect(runs(await collect(events.subscribe('job_r', { after: { run: 1, seq: 3 } })))).toEqual([
        '2:1:start',
        '2:2:token',
        '2:3:completed',
      ])
      expect(runs(await collect(events.subscribe('job_r', { after: { run: 2, seq: 1 } })))).toEqual([
        '2:2:token',
        '2:3:completed',
      ])
    })

    it('orders a terminal event published outside a run after that run’s events', async () => {
      const events = await setup()
      await events.publish(ev('job_f', 1, 'start', {}, 2))
      await events.publish(ev('job_f', 2, 'token', {}, 2))
      await events.publish(ev('job_f', FINAL_SEQ, 'canceled', null, 2))
      await events.publish(ev('job_f', 3, 'token', {}, 2)) // after the end: not seen
      expect(runs(await collect(events.subscribe('job_f')))).toEqual([
        '2:1:start',
        '2:2:token',
        `2:${FINAL_SEQ}:canceled`,
      ])
    })

    it('stops when the signal aborts', async () => {
      const events = await setup()
      const ac = new AbortController()
      const iter = events.subscribe('job_e', { signal: ac.signal })[Symbol.asyncIterator]()
      const first = iter.next()
      await events.publish(ev('job_e', 1))
      expect((await first).value?.seq).toBe(1)
      // Aborting ends a subscriber that is waiting for more.
      const next = iter.next()
      ac.abort()
      expect((await next).done).toBe(true)
    })
  })
}
