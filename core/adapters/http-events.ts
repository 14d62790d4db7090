/**
 * Events adapter for worker processes: publishes job events to the edge by
 * POSTing `JobEvent[]` to `{edgeUrl}/internal/events` with
 * `authorization: Bearer <PGPT_INTERNAL_TOKEN>` (edge/routes/internal.ts).
 * Events that arrive within `batchWindowMs` go out in one request; requests are
 * sent one at a time so the edge sees events in publish order. Network errors,
 * 5xx and 429 are retried with exponential backoff; other statuses (401: a
 * wrong token) fail at once.
 *
 * The edge takes bodies up to PGPT_MAX_INTERNAL_BODY_BYTES (`maxBodyBytes`,
 * the same setting on both sides): batches are split so each POST stays under
 * it, and a 413 (the edge set lower) splits the batch in halves. A terminal
 * event larger than the limit alone (a big job's output) goes without its data,
 * marked `dataInRecord`: the worker wrote that data into the job record before
 * publishing, and the edge reads it from there. Another event that large fails.
 *
 * `publish` of a terminal event (completed, failed, canceled) resolves when the
 * edge accepted it and everything before it; other events (tokens, progress)
 * resolve as soon as they are queued, so a generating job never waits on the
 * network per token; their failures go to `onError`. When more than
 * `maxBuffered` events wait, every publish waits (backpressure).
 *
 * Publish-only: a worker process has no subscribers, so `subscribe` throws.
 */
import { type Events, type JobEvent, TERMINAL_EVENT_TYPES } from '../ports/events.js'
import { createError } from './adapter-error.js'

export const HTTP_EVENTS = 'http-events'

export interface HttpEventsOptions {
  /** Base URL of the edge, e.g. http://edge:8787. */
  edgeUrl: string
  /** PGPT_INTERNAL_TOKEN (at least 16 characters). */
  token: string
  /** Wait this long for more events before sending a batch, ms. Default 5. */
  batchWindowMs?: number
  /** Events per request at most. Default 500 (the edge takes up to 10 000). */
  maxBatch?: number
  /** Largest POST body, bytes: the edge's PGPT_MAX_INTERNAL_BODY_BYTES. Default 16 MiB. */
  maxBodyBytes?: number
  /** Retries of a failed request. Default 3. */
  retries?: number
  /** First retry's wait, doubled each time (± 50 % jitter), ms. Default 100. */
  retryBaseMs?: number
  /** Per request, ms. Default 5 000. */
  timeoutMs?: number
  /** Undelivered events above which every publish waits for delivery. Default 10 000. */
  maxBuffered?: number
  /** Wait for delivery of every event, not only terminal ones. Default false. */
  awaitAll?: boolean
  /** Failures of events whose publish did not wait (tokens, progress). Default: ignored. */
  onError?: (err: unknown, events: JobEvent[]) => void
  fetch?: typeof fetch
}

interface Pending {
  event: JobEvent
  resolve: () => void
  reject: (err: unknown) => void
}

export class HttpEvents implements Events {
  readonly name = 'http'
  private readonly url: string
  private readonly o: Required<Omit<HttpEventsOptions, 'edgeUrl' | 'token' | 'fetch' | 'onError'>>
  private readonly fetchFn: typeof fetch
  private pending: Pending[] = []
  private timer: NodeJS.Timeout | undefined
  /** The chain of requests, so batches go out in order. */
  private sending: Promise<void> = Promise.resolve()
  /** Events published and not yet delivered or failed. */
  private buffered = 0

  constructor(private readonly options: HttpEventsOptions) {
    let base: URL
    try {
      base = new URL(options.edgeUrl)
    } catch {
      throw createError(HTTP_EVENTS, `edgeUrl is not a URL: '${options.edgeUrl}'`)
    }
    if (!options.token || options.token.length < 16)
      throw createError(HTTP_EVENTS, 'token (PGPT_INTERNAL_TOKEN) must be at least 16 characters')
    this.url = new URL('internal/events', base.href.endsWith('/') ? base.href : `${base.href}/`).href
    this.o = {
      batchWindowMs: options.batchWindowMs ?? 5,
      maxBatch: options.maxBatch ?? 500,
      maxBodyBytes: options.maxBodyBytes ?? 16 * 1_048_576,
      retries: options.retries ?? 3,
      retryBaseMs: options.retryBaseMs ?? 100,
      timeoutMs: options.timeoutMs ?? 5_000,
      maxBuffered: options.maxBuffered ?? 10_000,
      awaitAll: options.awaitAll ?? false,
    }
    if (this.o.maxBatch < 1 || this.o.maxBatch > 10_000)
      throw createError(HTTP_EVENTS, 'maxBatch must be 1-10000')
    this.fetchFn = options.fetch ?? fetch
  }

  publish(event: JobEvent): Promise<void> {
    this.buffered++
    const delivered = new Promise<void>((resolve, reject) => {
      this.pending.push({ event, resolve, reject })
      if (this.pending.length >= this.o.maxBatch) this.flushNow()
      else this.timer ??= setTimeout(() => this.flushNow(), this.o.batchWindowMs)
    }).finally(() => {
      this.buffered--
    })
    if (this.o.awaitAll || TERMINAL_EVENT_TYPES.includes(event.type) || this.buffered > this.o.maxBuffered)
      return delivered
    delivered.catch((err) => this.options.onError?.(err, [event]))
    return Promise.resolve()
  }

  subscribe(): AsyncIterable<JobEvent> {
    throw createError(
      HTTP_EVENTS,
      'subscribe is not supported: this adapter only publishes from a worker process to the edge; subscribe on the edge',
    )
  }

  /** Send everything pending now; resolves when all of it was sent (or failed). */
  async flush(): Promise<void> {
    this.flushNow()
    await this.sending
  }

  async close(): Promise<void> {
    await this.flush()
  }

  private flushNow(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    while (this.pending.length) {
      // Up to maxBatch events whose JSON array stays under maxBodyBytes (at least one event).
      const bodies: string[] = []
      let bytes = 2
      for (const p of this.pending) {
        if (bodies.length >= this.o.maxBatch) break
        let body = JSON.stringify(p.event)
        if (Buffer.byteLength(body) + 2 > this.o.maxBodyBytes) body = withoutData(body) ?? body
        const size = Buffer.byteLength(body) + (bodies.length ? 1 : 0)
        if (bodies.length && bytes + size > this.o.maxBodyBytes) break
        bodies.push(body)
        bytes += size
      }
      const batch = this.pending.splice(0, bodies.length)
      this.sending = this.sending.then(() =>
        this.send(bodies).then(
          () => {
            for (const p of batch) p.resolve()
          },
          (err) => {
            for (const p of batch) p.reject(err)
          },
        ),
      )
    }
  }

  /** POSTs the events (each already JSON); a 413 for more than one splits them in halves. */
  private async send(events: string[]): Promise<void> {
    const body = `[${events.join(',')}]`
    let lastError: unknown
    for (let attempt = 0; attempt <= this.o.retries; attempt++) {
      if (attempt > 0) {
        const wait = this.o.retryBaseMs * 2 ** (attempt - 1)
        await new Promise((r) => setTimeout(r, wait / 2 + Math.random() * (wait / 2)))
      }
      let res: Response
      try {
        res = await this.fetchFn(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.options.token}` },
          body,
          signal: AbortSignal.timeout(this.o.timeoutMs),
        })
      } catch (cause) {
        lastError = createError(HTTP_EVENTS, `POST ${this.url} failed`, { cause })
        continue
      }
      await res.body?.cancel().catch(() => {})
      if (res.ok) return
      if (res.status === 413 && events.length > 1) {
        const half = Math.ceil(events.length / 2)
        await this.send(events.slice(0, half))
        return this.send(events.slice(half))
      }
      const lighter = res.status === 413 ? withoutData(events[0]) : null
      if (lighter) return this.send([lighter])
      lastError = createError(
        HTTP_EVENTS,
        res.status === 413
          ? `POST ${this.url} answered 413: one event of ${Buffer.byteLength(body)} bytes is above the edge's PGPT_MAX_INTERNAL_BODY_BYTES`
          : `POST ${this.url} answered ${res.status}`,
      )
      if (res.status !== 429 && res.status < 500) throw lastError
    }
    throw lastError
  }
}

/** A terminal event's JSON without its data, for the edge to read from the job record; null for others. */
function withoutData(json: string): string | null {
  const event = JSON.parse(json) as JobEvent & { dataInRecord?: true }
  if (!TERMINAL_EVENT_TYPES.includes(event.type) || event.dataInRecord) return null
  return JSON.stringify({ ...event, data: null, dataInRecord: true })
}
