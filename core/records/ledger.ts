/**
 * Per-tenant ledgers: what a tenant holds of a capped resource (stored files,
 * batch tokens enqueued, active fine-tuning jobs), one JSON record per tenant
 * and resource in the ObjectStore, changed only by compare-and-swap
 * (object-records.ts `casUpdate`). The cap is checked inside the swap, so
 * requests racing on any number of edges cannot pass it together: at most the
 * cap is admitted.
 *
 *   ledgers/<name>/<tenant>.json   { "entries": { "<id>": [weight, admitted at ms] } }
 *
 * Entries are keyed by the thing's id, so admitting an id twice replaces it
 * (a batch output written again) and releasing is idempotent (a delete racing
 * the retention sweep). A ledger whose things end by themselves (batches,
 * jobs) is pruned at admission: `finished` names the entries that have ended,
 * read from their own records, before the swap drops them.
 */
import { casUpdate, encodeSegment, getJson } from '../adapters/object-records.js'
import type { ObjectStore } from '../ports/object-store.js'

type Entries = Record<string, [weight: number, at: number]>
interface Ledger {
  entries: Entries
}

export interface LedgerCaps {
  /** Most entries (files, jobs). */
  maxEntries?: number
  /** Most total weight (bytes, tokens). */
  maxWeight?: number
}

export interface LedgerTotals {
  entries: number
  weight: number
}

export type Admission =
  | { ok: true; held: LedgerTotals }
  | { ok: false; held: LedgerTotals; over: 'entries' | 'weight' }

export interface AdmitOptions {
  /** Caps the ledger may not pass with this entry; none: always admitted (counted, never refused). */
  caps?: LedgerCaps
  /** Epoch ms. */
  now?: number
  /** The entries of a ledger that does not exist yet (e.g. from a listing of what is already stored). */
  seed?: () => Promise<Record<string, number>>
  /** Of these entries, the ids whose thing has ended: dropped before the cap is checked. */
  finished?: (entries: Array<{ id: string; at: number }>) => Promise<Iterable<string>>
}

/**
 * How long an entry whose record cannot be found is kept: the record is
 * written just after the entry is admitted, so a younger one is still being
 * made; an older one was left by a request that failed between the two.
 */
export const ORPHAN_GRACE_MS = 10 * 60_000

/**
 * A `finished` for things with records: `ended(id)` says true (ended), false
 * (running) or null (no record: ended once older than ORPHAN_GRACE_MS).
 */
export const endedByRecord =
  (ended: (id: string) => Promise<boolean | null>, now: () => number) =>
  async (entries: Array<{ id: string; at: number }>): Promise<string[]> => {
    const out: string[] = []
    for (const e of entries) if ((await ended(e.id)) ?? e.at + ORPHAN_GRACE_MS < now()) out.push(e.id)
    return out
  }

export const ledgerKey = (name: string, tenant: string) => `ledgers/${name}/${encodeSegment(tenant)}.json`

const totals = (entries: Entries, skip?: string): LedgerTotals => {
  let n = 0
  let weight = 0
  for (const [id, [w]] of Object.entries(entries))
    if (id !== skip) {
      n++
      weight += w
    }
  return { entries: n, weight }
}

/**
 * Adds (or replaces) `id` with `weight` unless that takes the ledger past a
 * cap. `held` is what the ledger holds besides this entry.
 */
export async function admit(
  store: ObjectStore,
  name: string,
  tenant: string,
  entry: { id: string; weight: number },
  o: AdmitOptions = {},
): Promise<Admission> {
  const key = ledgerKey(name, tenant)
  const now = o.now ?? Date.now()
  const snapshot = await getJson<Ledger>(store, key)
  const seeded = snapshot === null && o.seed ? await o.seed() : {}
  const ended = new Set(
    snapshot && o.finished
      ? await o.finished(
          Object.entries(snapshot.entries)
            .filter(([id]) => id !== entry.id)
            .map(([id, [, at]]) => ({ id, at })),
        )
      : [],
  )
  return casUpdate<Ledger, Admission>('ledger', store, key, (cur) => {
    const entries: Entries = cur
      ? { ...cur.entries }
      : Object.fromEntries(Object.entries(seeded).map(([id, w]) => [id, [w, now]]))
    // Only entries seen ended in the snapshot go: one admitted since is kept.
    for (const id of ended) delete entries[id]
    const held = totals(entries, entry.id)
    const caps = o.caps ?? {}
    if (caps.maxEntries !== undefined && held.entries + 1 > caps.maxEntries)
      return { done: { ok: false, held, over: 'entries' } }
    if (caps.maxWeight !== undefined && held.weight + entry.weight > caps.maxWeight)
      return { done: { ok: false, held, over: 'weight' } }
    entries[entry.id] = [entry.weight, now]
    return { write: { entries }, result: { ok: true, held } }
  })
}

/** Drops entries (a deleted file, a job that could not be queued); a missing id or ledger is no error. */
export async function release(
  store: ObjectStore,
  name: string,
  tenant: string,
  ids: string[],
): Promise<void> {
  await casUpdate<Ledger, void>('ledger', store, ledgerKey(name, tenant), (cur) => {
    if (!cur || !ids.some((id) => id in cur.entries)) return { done: undefined }
    const entries = { ...cur.entries }
    for (const id of ids) delete entries[id]
    return { write: { entries }, result: undefined }
  })
}

/** What the ledger holds now (null: there is none yet). */
export async function ledgerTotals(
  store: ObjectStore,
  name: string,
  tenant: string,
): Promise<LedgerTotals | null> {
  const l = await getJson<Ledger>(store, ledgerKey(name, tenant))
  return l ? totals(l.entries) : null
}
