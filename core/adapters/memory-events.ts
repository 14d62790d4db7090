/**
 * In-process Events adapter: the local profile's hub. The edge's SSE routes
 * subscribe here; workers in the same process publish directly, workers in
 * other processes publish through the edge's internal events route.
 * Recent events of each job are retained (bounded) so a late or reconnecting
 * subscriber can replay from `after`. Events are ordered by (run, seq)
 * (core/ports/events.ts): a newer run replaces what was kept of the older one,
 * and a late event of an older run is dropped.
 */
import {
  type EventPosition,
  type Events,
  isAfter,
  type JobEvent,
  type SubscribeOptions,
  TERMINAL_EVENT_TYPES,
} from '../ports/events.js'

export interface MemoryEventsOptions {
  /** Events kept per job for replay. Default 10 000. */
  retainPerJob?: number
  /** Jobs whose events are kept. Default 1 000; the oldest job is dropped first. */
  retainJobs?: number
}

type Listener = (e: JobEvent) => void

interface Retained {
  events: JobEvent[]
  /** The last event accepted (kept even when retention dropped it from `events`). */
  last?: EventPosition
}

export class MemoryEvents implements Events {
  readonly name = 'memory'
  private readonly retained = new Map<string, Retained>()
  private readonly listeners = new Map<string, Set<Listener>>()
  private readonly retainPerJob: number
  private readonly retainJobs: number

  constructor(options: MemoryEventsOptions = {}) {
    this.retainPerJob = options.retainPerJob ?? 10_000
    this.retainJobs = options.retainJobs ?? 1_000
    if (this.retainPerJob < 1 || this.retainJobs < 1) throw new Error('MemoryEvents: retention must be >= 1')
  }

  async publish(event: JobEvent): Promise<void> {
    let job = this.retained.get(event.jobId)
    if (!job) {
      job = { events: [] }
      this.retained.set(event.jobId, job)
      if (this.retained.size > this.retainJobs) {
        const oldest = this.retained.keys().next().value
        if (oldest !== undefined) this.retained.delete(oldest)
      }
    }
    // A repeated seq, or a late event of a run that lost the job: already superseded.
    if (!isAfter(event, job.last)) return
    // A newer run (the job was redelivered): its events replace the older run's.
    if (job.last && event.run > job.last.run) job.events = []
    job.last = { run: event.run, seq: event.seq }
    job.events.push(event)
    if (job.events.length > this.retainPerJob) job.events.shift()
    for (const l of this.listeners.get(event.jobId) ?? []) l(event)
  }

  async *subscribe(jobId: string, options: SubscribeOptions = {}): AsyncIterable<JobEvent> {
    const { signal } = options
    let last = options.after
    const pending: JobEvent[] = []
    let wake: (() => void) | undefined
    const listener: Listener = (e) => {
      pending.push(e)
      wake?.()
    }
    let set = this.listeners.get(jobId)
    if (!set) {
      set = new Set()
      this.listeners.set(jobId, set)
    }
    set.add(listener)
    const onAbort = () => wake?.()
    signal?.addEventListener('abort', onAbort)
    try {
      // Replay first; the listener is already attached so nothing falls in between.
      pending.unshift(...(this.retained.get(jobId)?.events ?? []))
      while (!signal?.aborted) {
        const e = pending.shift()
        if (!e) {
          await new Promise<void>((resolve) => {
            wake = resolve
          })
          wake = undefined
          continue
        }
        if (!isAfter(e, last)) continue
        last = e
        yield e
        if (TERMINAL_EVENT_TYPES.includes(e.type)) return
      }
    } finally {
      signal?.removeEventListener('abort', onAbort)
      set.delete(listener)
      if (set.size === 0) this.listeners.delete(jobId)
    }
  }
}
