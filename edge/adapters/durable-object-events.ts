/**
 * Events on Cloudflare Workers: one Durable Object per job holds the job's
 * events (in memory and in its storage) and streams them to subscribers, so a
 * worker's events posted to any edge isolate (POST /internal/events) reach the
 * isolate that holds the client's request. Same semantics as the in-process
 * hub (core/adapters/memory-events.ts): events ordered by (run, seq), replay
 * after a position, a repeated seq or a late event of an older run is ignored,
 * a newer run replaces the older run's events, a subscription ends at the
 * terminal event.
 *
 * `EventsHubDurableObject` is the class the Worker exports (edge/worker.ts,
 * wrangler.jsonc); `DurableObjectEvents` is the adapter. Plain fetch + NDJSON,
 * no `cloudflare:workers` import. Storage of a finished job is deleted by an
 * alarm after `RETAIN_MS`.
 */
import {
  type Events,
  isAfter,
  type JobEvent,
  type SubscribeOptions,
  TERMINAL_EVENT_TYPES,
} from '../../core/ports/events.js'

export const DURABLE_OBJECT_EVENTS = 'durable-object-events'
/** How long a finished job's events stay for late subscribers. */
export const RETAIN_MS = 60 * 60 * 1000

export interface EventsNamespace {
  idFromName(name: string): unknown
  get(id: never): { fetch(input: string, init?: RequestInit): Promise<Response> }
}

interface DoStorage {
  get<T>(key: string): Promise<T | undefined>
  put<T>(key: string, value: T): Promise<void>
  list<T>(o: { prefix: string }): Promise<Map<string, T>>
  deleteAll(): Promise<void>
  setAlarm(at: number): Promise<void>
}

const isTerminal = (e: JobEvent) => TERMINAL_EVENT_TYPES.includes(e.type)
const encoder = new TextEncoder()

export class EventsHubDurableObject {
  private events: JobEvent[] | undefined
  private readonly subscribers = new Set<WritableStreamDefaultWriter<Uint8Array>>()

  constructor(
    private readonly state: { storage: DoStorage },
    _env?: unknown,
  ) {}

  private async load(): Promise<JobEvent[]> {
    if (!this.events) {
      const stored = await this.state.storage.list<JobEvent>({ prefix: 'e:' })
      // Events stored before runs existed were run 1's; only the newest run's are kept.
      const all = [...stored.values()].map((e) => ({ ...e, run: e.run ?? 1 }))
      const run = Math.max(0, ...all.map((e) => e.run))
      this.events ??= all.filter((e) => e.run === run).sort((a, b) => a.seq - b.seq)
    }
    return this.events
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url)
    const events = await this.load()
    if (url.pathname === '/publish' && request.method === 'POST') {
      const batch = (await request.json()) as JobEvent[]
      for (const e of batch) {
        const last = events.at(-1)
        if (last && (!isAfter(e, last) || isTerminal(last))) continue
        if (last && e.run > last.run) {
          // The job was redelivered: the newer run's events replace the older run's.
          events.length = 0
          void this.state.storage.deleteAll()
        }
        events.push(e)
        void this.state.storage.put(
          `e:${String(e.run).padStart(6, '0')}:${String(e.seq).padStart(12, '0')}`,
          e,
        )
        const line = encoder.encode(`${JSON.stringify(e)}\n`)
        for (const w of this.subscribers) {
          w.write(line).catch(() => this.subscribers.delete(w))
          if (isTerminal(e)) {
            w.close().catch(() => {})
            this.subscribers.delete(w)
          }
        }
        if (isTerminal(e)) void this.state.storage.setAlarm(Date.now() + RETAIN_MS)
      }
      return Response.json({ accepted: batch.length })
    }
    if (url.pathname === '/subscribe') {
      const after = {
        run: Number(url.searchParams.get('run') ?? 0),
        seq: Number(url.searchParams.get('after') ?? 0),
      }
      const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>()
      const writer = writable.getWriter()
      let ended = false
      for (const e of events) {
        if (!isAfter(e, after)) continue
        void writer.write(encoder.encode(`${JSON.stringify(e)}\n`))
        if (isTerminal(e)) ended = true
      }
      if (ended) void writer.close()
      else this.subscribers.add(writer)
      return new Response(readable, { headers: { 'content-type': 'application/x-ndjson' } })
    }
    return new Response('not found', { status: 404 })
  }

  async alarm(): Promise<void> {
    this.events = undefined
    await this.state.storage.deleteAll()
  }
}

export interface DurableObjectEventsOptions {
  /** Prepended to job ids when naming objects (keeps deployments or tests apart). */
  prefix?: string
}

export class DurableObjectEvents implements Events {
  readonly name = DURABLE_OBJECT_EVENTS
  private readonly prefix: string

  constructor(
    private readonly ns: EventsNamespace,
    o: DurableObjectEventsOptions = {},
  ) {
    this.prefix = o.prefix ?? ''
  }

  private stub(jobId: string) {
    return this.ns.get(this.ns.idFromName(this.prefix + jobId) as never)
  }

  async publish(event: JobEvent): Promise<void> {
    await this.publishMany([event])
  }

  /** One request per job for a batch (what POST /internal/events receives from a worker). */
  async publishMany(events: JobEvent[]): Promise<void> {
    const byJob = new Map<string, JobEvent[]>()
    for (const e of events) byJob.set(e.jobId, [...(byJob.get(e.jobId) ?? []), e])
    await Promise.all(
      [...byJob].map(async ([jobId, batch]) => {
        const res = await this.stub(jobId).fetch('https://events/publish', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(batch),
        })
        if (!res.ok) throw new Error(`[${this.name}] publish: ${res.status}`)
        await res.body?.cancel()
      }),
    )
  }

  async *subscribe(jobId: string, options: SubscribeOptions = {}): AsyncIterable<JobEvent> {
    const { signal } = options
    if (signal?.aborted) return
    const { run = 0, seq = 0 } = options.after ?? {}
    const res = await this.stub(jobId).fetch(`https://events/subscribe?run=${run}&after=${seq}`)
    if (!res.ok || !res.body) throw new Error(`[${this.name}] subscribe: ${res.status}`)
    const reader = res.body.getReader()
    const onAbort = () => void reader.cancel().catch(() => {})
    signal?.addEventListener('abort', onAbort)
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      while (!signal?.aborted) {
        const { value, done } = await reader.read()
        if (done) return
        buffer += decoder.decode(value, { stream: true })
        let nl = buffer.indexOf('\n')
        while (nl >= 0) {
          const line = buffer.slice(0, nl)
          buffer = buffer.slice(nl + 1)
          nl = buffer.indexOf('\n')
          if (!line) continue
          const e = JSON.parse(line) as JobEvent
          yield e
          if (isTerminal(e)) return
        }
      }
    } catch (err) {
      if (!signal?.aborted) throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
      reader.cancel().catch(() => {})
    }
  }
}
