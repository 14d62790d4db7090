/**
 * RateLimiter on Cloudflare Workers: one Durable Object per bucket key runs
 * the same GCRA step as the in-memory adapter (core/adapters/memory-rate-limiter.ts).
 * A Durable Object handles one event at a time and its storage calls keep
 * input gates closed, so decisions are exact across all edge isolates.
 *
 * `RateLimiterDurableObject` is the class to export from the Worker (see
 * edge/worker.ts, wrangler.jsonc); `DurableObjectRateLimiter` is the adapter
 * the edge calls, given the namespace binding. The protocol is plain fetch
 * with JSON so it needs no `cloudflare:workers` import.
 */
import { gcra, gcraRefund } from '../../core/adapters/memory-rate-limiter.js'
import type { RateLimitDecision, RateLimiter, RateLimitRule } from '../../core/ports/rate-limiter.js'

export const DURABLE_OBJECT_RATE_LIMITER = 'durable-object'

/** The slice of DurableObjectNamespace the adapter uses (a binding, or Miniflare's proxy in tests). */
export interface RateLimiterNamespace {
  idFromName(name: string): unknown
  get(id: never): { fetch(input: string, init?: RequestInit): Promise<Response> }
}

interface StorageLike {
  get<T>(key: string): Promise<T | undefined>
  put<T>(key: string, value: T): Promise<void>
  delete(key: string): Promise<boolean>
}

type Op =
  | { op: 'consume'; key: string; cost: number; rule: RateLimitRule }
  | { op: 'refund'; key: string; cost: number; rule: RateLimitRule }

export class RateLimiterDurableObject {
  private readonly tats = new Map<string, number>()
  private readonly storage: StorageLike

  constructor(state: { storage: StorageLike }, _env?: unknown) {
    this.storage = state.storage
  }

  private async tat(key: string): Promise<number | undefined> {
    if (!this.tats.has(key)) {
      const stored = await this.storage.get<number>(key)
      if (stored !== undefined && !this.tats.has(key)) this.tats.set(key, stored)
    }
    return this.tats.get(key)
  }

  private save(key: string, tat: number | undefined): void {
    if (tat === undefined) {
      this.tats.delete(key)
      void this.storage.delete(key)
    } else {
      this.tats.set(key, tat)
      void this.storage.put(key, tat)
    }
  }

  async fetch(request: Request): Promise<Response> {
    let body: Op
    try {
      body = (await request.json()) as Op
    } catch {
      return new Response('bad request', { status: 400 })
    }
    const now = Date.now()
    const stored = await this.tat(body.key)
    if (body.op === 'refund') {
      this.save(body.key, gcraRefund(stored, now, body.cost, body.rule))
      return Response.json({ ok: true })
    }
    try {
      const { decision, tat } = gcra(stored, now, body.cost, body.rule)
      if (tat !== stored) this.save(body.key, tat)
      // JSON has no Infinity: -1 stands for "never".
      return Response.json({
        ...decision,
        retryAfterSeconds: Number.isFinite(decision.retryAfterSeconds) ? decision.retryAfterSeconds : -1,
      })
    } catch (err) {
      return new Response((err as Error).message, { status: 400 })
    }
  }
}

export class DurableObjectRateLimiter implements RateLimiter {
  readonly name = DURABLE_OBJECT_RATE_LIMITER

  constructor(private readonly ns: RateLimiterNamespace) {}

  private async call(body: Op): Promise<Response> {
    const stub = this.ns.get(this.ns.idFromName(body.key) as never)
    const res = await stub.fetch('https://rate-limiter/', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (!res.ok) throw new Error(`[${this.name}] ${res.status} ${await res.text()}`)
    return res
  }

  async consume(key: string, cost: number, rule: RateLimitRule): Promise<RateLimitDecision> {
    const d = (await (await this.call({ op: 'consume', key, cost, rule })).json()) as RateLimitDecision
    return {
      ...d,
      retryAfterSeconds: d.retryAfterSeconds < 0 ? Number.POSITIVE_INFINITY : d.retryAfterSeconds,
    }
  }

  async refund(key: string, cost: number, rule: RateLimitRule): Promise<void> {
    await (await this.call({ op: 'refund', key, cost, rule })).body?.cancel()
  }
}
