/**
 * Contract suite for the Events port. Every adapter's test file calls
 * `testEvents({ name, make })` and nothing else; the suite never skips.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Events, JobEvent } from '../../core/ports/events.js'

export interface EventsContractOptions {
  name: string
  make: () => Promise<{ events: Events; cleanup?: () => Promise<void> }>
}

const ev = (
  jobId: string,
  seq: number,
  type: JobEvent['type'] = 'token',
  data: unknown = { seq },
): JobEvent => ({
  jobId,
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

    it('replays events published before the subscriber arrived, after afterSeq', async () => {
      const events = await setup()
      for (let i = 1; i <= 3; i++) await events.publish(ev('job_b', i))
      await events.publish(ev('job_b', 4, 'failed', { message: 'boom' }))
      expect((await collect(events.subscribe('job_b'))).map((e) => e.seq)).toEqual([1, 2, 3, 4])
      expect((await collect(events.subscribe('job_b', { afterSeq: 2 }))).map((e) => e.seq)).toEqual([3, 4])
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
