import { describe, expect, it } from 'vitest'
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryJobStore } from '../core/adapters/memory-job-store.js'
import { silentLogger } from '../core/logger.js'
import type { JobEvent } from '../core/ports/events.js'
import type { JobRecord } from '../core/ports/job-store.js'
import { failDeadLetteredJob } from './dead-letter.js'

describe('failDeadLetteredJob', () => {
  const setup = () => {
    const jobs = new MemoryJobStore()
    const events = new MemoryEvents()
    const seen: Array<[JobRecord, JobEvent]> = []
    const o = {
      jobs,
      events,
      maxReceiveCount: 5,
      logger: silentLogger,
      onJobEvent: (j: JobRecord, e: JobEvent) => void seen.push([j, e]),
    }
    return { jobs, events, seen, o }
  }
  const body = (jobId: string) => JSON.stringify({ jobId, kind: 'generation', requestId: 'req_1' })

  it('fails a queued or running job with the reason, publishes the failed event and calls the hook', async () => {
    const { jobs, events, seen, o } = setup()
    const a = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    const b = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    await jobs.transition(b.id, 'running')
    for (const j of [a, b]) {
      expect(await failDeadLetteredJob(body(j.id), o)).toEqual({ outcome: 'failed', jobId: j.id })
      const rec = await jobs.getById(j.id)
      expect(rec?.state).toBe('failed')
      expect(rec?.error).toEqual({ code: 'dead_lettered', message: 'dead-lettered after 5 deliveries' })
    }
    expect(seen.map(([j, e]) => [j.state, e.type])).toEqual([
      ['failed', 'failed'],
      ['failed', 'failed'],
    ])
    const sub = events.subscribe(a.id)[Symbol.asyncIterator]()
    expect((await sub.next()).value).toMatchObject({ type: 'failed', data: { code: 'dead_lettered' } })
  })

  it('leaves finished jobs alone and drops what is not a job pointer', async () => {
    const { jobs, seen, o } = setup()
    const done = await jobs.create({ tenant: 't', kind: 'generation', input: {} })
    await jobs.transition(done.id, 'canceled')
    expect(await failDeadLetteredJob(body(done.id), o)).toEqual({
      outcome: 'already_finished',
      jobId: done.id,
    })
    expect((await jobs.getById(done.id))?.state).toBe('canceled')
    expect(await failDeadLetteredJob(body('job_missing'), o)).toEqual({
      outcome: 'dropped',
      jobId: 'job_missing',
    })
    expect(await failDeadLetteredJob('{"nope":1}', o)).toEqual({ outcome: 'dropped' })
    expect(seen).toEqual([])
  })

  it('a job store error throws, so the message stays for another try', async () => {
    const { o } = setup()
    o.jobs.getById = async () => {
      throw new Error('store down')
    }
    await expect(failDeadLetteredJob(body('job_1'), o)).rejects.toThrow('store down')
  })
})
