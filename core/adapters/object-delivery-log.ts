/**
 * DeliveryLog over the ObjectStore port (core/ports/delivery-log.ts): the
 * webhook delivery log of the cloud profiles, in the store every worker pod
 * (and the dead-letter Lambda) shares, so a retry scheduled hours ahead by a
 * pod that is gone is sent by whichever dispatcher looks next. Needs
 * conditional puts (S3, R2, MinIO, FsObjectStore, memory); construction
 * throws otherwise.
 *
 * Layout, under `prefix` (default `webhooks/`):
 *
 *   deliveries/<id>            the delivery, one JSON object (created If-None-Match: *, changed If-Match)
 *   due/<nextAttemptAt>~<id>   an empty entry per scheduled attempt: keys sort by time,
 *                              so a dispatcher lists only what is due (epoch ms, 15 digits)
 *   by-job/<jobId>/<id>        an empty entry per delivery (listByJob)
 *   finished/<updatedAt>~<id>  an empty entry per ended delivery (prune)
 *
 * Due entries are hints, written BEFORE the change that makes them true
 * (enqueue, a claim's lease end, a retry's time), so a crash in between
 * leaves a stale entry, never a delivery that no entry points at. A pass
 * over the due entries (claimDue) drops the stale ones it meets: the
 * delivery ended, or it is scheduled later than now (its current time has
 * its own entry, written before it), or it does not exist and the entry is
 * older than ORPHAN_GRACE_MS (an enqueue that crashed, or a pruned delivery;
 * younger ones may be an enqueue between its entry and its record).
 *
 * A claim is a compare-and-swap of the record (If-Match on the etag read):
 * of two dispatchers claiming one delivery exactly one succeeds, the other
 * leaves it. The adapter never closes the store it was given (it may be shared).
 */
import type { AttemptOutcome, Delivery, DeliveryLog, NewDelivery } from '../ports/delivery-log.js'
import { type ObjectStore, PreconditionFailedError } from '../ports/object-store.js'
import {
  casUpdate,
  decodeSegment,
  encodeSegment,
  getJson,
  listAll,
  mapLimit,
  normalisePrefix,
  padTime,
  putIfAbsent,
  requireConditionalPut,
  toJson,
} from './object-records.js'

export const OBJECT_DELIVERY_LOG = 'object-delivery-log'

/** How old a due entry without a delivery must be before a pass deletes it. */
export const ORPHAN_GRACE_MS = 60_000

export interface ObjectDeliveryLogOptions {
  /** The backend; must enforce conditional puts (`supportsConditionalPut`). */
  store: ObjectStore
  /** Key prefix of the log. Default `webhooks/`. */
  prefix?: string
}

const ended = (d: Delivery) => d.status === 'succeeded' || d.status === 'failed'
const isDue = (d: Delivery, now: number) => !ended(d) && d.nextAttemptAt <= now

type Examined =
  | { claimed: Delivery }
  | { claimed: null; current: Delivery | null }
  /** Another writer changed the delivery between our read and our write. */
  | { claimed: null; raced: true }

export class ObjectDeliveryLog implements DeliveryLog {
  readonly name = OBJECT_DELIVERY_LOG
  private readonly store: ObjectStore
  private readonly prefix: string

  constructor(options: ObjectDeliveryLogOptions) {
    requireConditionalPut(OBJECT_DELIVERY_LOG, options?.store)
    this.store = options.store
    this.prefix = normalisePrefix(options.prefix, 'webhooks/')
  }

  private recordKey(id: string) {
    return `${this.prefix}deliveries/${encodeSegment(id)}`
  }
  private jobPrefix(jobId: string) {
    return `${this.prefix}by-job/${encodeSegment(jobId)}/`
  }
  private timedKey(kind: 'due' | 'finished', at: number, id: string) {
    return `${this.prefix}${kind}/${padTime(at)}~${encodeSegment(id)}`
  }
  /** `<time>~<id>` after a timed prefix; null for a key of another shape. */
  private parseTimed(kind: 'due' | 'finished', key: string): { at: number; id: string } | null {
    const [time, id, extra] = key.slice(`${this.prefix}${kind}/`.length).split('~')
    const at = Number(time)
    return id === undefined || extra !== undefined || !Number.isSafeInteger(at)
      ? null
      : { at, id: decodeSegment(id) }
  }
  private put(key: string) {
    return this.store.put(key, '')
  }

  async enqueue(d: NewDelivery, now = Date.now()): Promise<boolean> {
    // The usual repeat (a job run twice) writes nothing; a racing one is refused by the create below.
    if (await this.store.head(this.recordKey(d.id))) return false
    await this.put(this.timedKey('due', now, d.id))
    await this.put(`${this.jobPrefix(d.jobId)}${encodeSegment(d.id)}`)
    const rec: Delivery = {
      id: d.id,
      jobId: d.jobId,
      requestId: d.requestId,
      tenant: d.tenant,
      event: d.event,
      url: d.url,
      payload: d.payload,
      attempt: 0,
      status: 'pending',
      responseCode: null,
      lastError: null,
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    }
    return putIfAbsent(this.store, this.recordKey(d.id), toJson(rec))
  }

  /** Lease one delivery if it is due: its lease-end entry first, then the record by If-Match. */
  private async examine(id: string, leaseMs: number, now: number): Promise<Examined> {
    const key = this.recordKey(id)
    const info = await this.store.head(key)
    const current = info ? await getJson<Delivery>(this.store, key) : null
    if (!info || !current || !isDue(current, now)) return { claimed: null, current }
    const next: Delivery = { ...current, status: 'delivering', nextAttemptAt: now + leaseMs, updatedAt: now }
    await this.put(this.timedKey('due', next.nextAttemptAt, id))
    try {
      await this.store.put(key, toJson(next), { ifMatch: info.etag, contentType: 'application/json' })
    } catch (err) {
      // Its lease entry stays: stale, dropped by the pass that meets it.
      if (err instanceof PreconditionFailedError) return { claimed: null, raced: true }
      throw err
    }
    return { claimed: next }
  }

  async claimDue(limit: number, leaseMs: number, now = Date.now()): Promise<Delivery[]> {
    const out: Delivery[] = []
    let failure: unknown
    const prefix = `${this.prefix}due/`
    for await (const key of listAll(this.store, prefix)) {
      if (out.length >= limit) break
      const entry = this.parseTimed('due', key)
      if (!entry) continue
      // Entries list oldest first: the first one in the future ends the pass.
      if (entry.at > now) break
      let r: Examined
      try {
        r = await this.examine(entry.id, leaseMs, now)
      } catch (err) {
        // One delivery that cannot be read or claimed does not hold up the ones due after it.
        failure ??= err
        continue
      }
      if (r.claimed) out.push(r.claimed)
      if ('raced' in r) continue
      const stale =
        r.claimed !== null ||
        (r.current === null
          ? entry.at < now - ORPHAN_GRACE_MS
          : ended(r.current) || r.current.nextAttemptAt > now)
      if (stale) await this.store.delete(key)
    }
    // Nothing claimed and something failed: say so (the dispatcher logs it and polls again).
    if (!out.length && failure !== undefined) throw failure
    return out
  }

  async claim(id: string, leaseMs: number, now = Date.now()): Promise<Delivery | null> {
    // The entry it was due by stays: the next pass finds it scheduled later and drops it.
    const r = await this.examine(id, leaseMs, now)
    return r.claimed
  }

  async recordAttempt(id: string, outcome: AttemptOutcome, now = Date.now()): Promise<void> {
    const nextAttemptAt = outcome.nextAttemptAt ?? now
    // The entry the new state needs, before the state (as a terminal job's retention entry).
    if (outcome.status === 'pending') await this.put(this.timedKey('due', nextAttemptAt, id))
    else await this.put(this.timedKey('finished', now, id))
    const previous = await casUpdate<Delivery, number | undefined>(
      OBJECT_DELIVERY_LOG,
      this.store,
      this.recordKey(id),
      (current) =>
        current
          ? {
              write: {
                ...current,
                attempt: current.attempt + 1,
                status: outcome.status,
                responseCode: outcome.responseCode,
                lastError: outcome.error,
                nextAttemptAt,
                updatedAt: now,
              },
              result: current.nextAttemptAt,
            }
          : { done: undefined },
    )
    // The lease's entry is stale now; dropping it spares a later pass the look.
    if (previous !== undefined && previous !== nextAttemptAt)
      await this.store.delete(this.timedKey('due', previous, id)).catch(() => {})
  }

  get(id: string): Promise<Delivery | null> {
    return getJson<Delivery>(this.store, this.recordKey(id))
  }

  async listByJob(jobId: string): Promise<Delivery[]> {
    const prefix = this.jobPrefix(jobId)
    const ids: string[] = []
    for await (const key of listAll(this.store, prefix)) ids.push(decodeSegment(key.slice(prefix.length)))
    const found = (await mapLimit(ids, 16, (id) => this.get(id))).filter((d): d is Delivery => d !== null)
    return found.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  async nextDueAt(): Promise<number | null> {
    const page = await this.store.list(`${this.prefix}due/`, { limit: 1 })
    const first = page.objects[0]
    return first ? (this.parseTimed('due', first.key)?.at ?? null) : null
  }

  async prune(before: number): Promise<number> {
    let n = 0
    for await (const key of listAll(this.store, `${this.prefix}finished/`)) {
      const entry = this.parseTimed('finished', key)
      if (!entry) continue
      // Oldest first: the first entry at or past the cutoff ends the walk.
      if (!(entry.at < before)) break
      const d = await this.get(entry.id)
      if (d && ended(d) && d.updatedAt < before) {
        // Index entry, then the record, then this entry: a crash between leaves what the next prune finishes.
        await this.store.delete(`${this.jobPrefix(d.jobId)}${encodeSegment(d.id)}`)
        await this.store.delete(this.recordKey(d.id))
        n++
      }
      await this.store.delete(key)
    }
    return n
  }
}
