/**
 * Prometheus metrics (prom-client), named in the style of vLLM and TGI:
 * `pgpt:` prefix for serving metrics, seconds for time, `_total` for counters.
 * docs/operations.md has the table; keep the two in step.
 *
 * One `Metrics` object per process (edge or worker), each with its own
 * Registry so tests can create several side by side.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { branch, type ValueTree } from './value-tree.js'

/**
 * Fast paths for counters and histograms with labels. prom-client turns the
 * label object into its key string and validates it on every inc/observe
 * (a histogram with three labels: ~6 000 instructions, more than all the
 * other metric work of a cache hit). Here each label set keeps a reference to
 * prom-client's own entry for it once prom-client has created it, and later
 * calls update that entry directly;
 * the first call for a label set and any unusual argument take prom-client's
 * path, and so does every label set after reset, remove or zero (the known
 * entries are forgotten then, the only calls that replace them) (so a
 * label name that was not declared is refused there, but only on a label
 * set's first call: later calls are not validated again). The
 * export is prom-client's, unchanged (core/metrics.test.ts compares both).
 * It reads prom-client 15's per-metric `hashMap` ({value, labels} for a
 * counter; {labels, bucketValues, sum, count} for a histogram); a metric
 * without one is left as it is.
 */
interface Internals {
  hashMap: Record<string, { labels: Record<string, unknown> }>
  labelNames: string[]
  enableExemplars?: boolean
}
type Labels = Record<string, unknown>

const internals = (m: object): Internals | undefined => {
  const i = m as Partial<Internals>
  return i.hashMap &&
    typeof i.hashMap === 'object' &&
    Array.isArray(i.labelNames) &&
    i.labelNames.length > 0 &&
    !i.enableExemplars
    ? (i as Internals)
    : undefined
}

/** prom-client's entry for a label set. */
function entryOf<E>(m: Internals, labels: Labels): E | undefined {
  for (const entry of Object.values(m.hashMap))
    if (
      m.labelNames.every((n) => {
        const [a, b] = [entry.labels[n], labels[n]] // as prom-client's key: a label left out ≠ 'undefined'
        return (a === undefined) === (b === undefined) && String(a) === String(b)
      })
    )
      return entry as E
  return undefined
}

const isLabels = (x: unknown): x is Labels => x !== null && typeof x === 'object'

/**
 * Label sets' entries, in a tree by label value, forgotten when the metric's
 * reset, remove or zero is called: those replace or drop prom-client's entries.
 */
function entries<E>(metric: object, m: Internals) {
  const names = m.labelNames
  const last = names.length - 1
  const root: ValueTree = new Map()
  const own = metric as Record<string, unknown>
  for (const name of ['reset', 'remove', 'zero']) {
    const replaces = own[name]
    if (typeof replaces === 'function')
      own[name] = (...args: unknown[]) => {
        root.clear()
        return replaces.apply(metric, args)
      }
  }
  return {
    /**
     * Only for labels given in declared order (as this codebase's calls do;
     * others take prom-client's path). Read by for-in, not `labels[name]`:
     * one reading site for every metric's label objects made that load
     * megamorphic (a stub-cache probe per label), while for-in reads each
     * value by its field index.
     */
    get(labels: Labels): E | undefined {
      let node: unknown = root
      let i = 0
      for (const name in labels) {
        if (name !== names[i++] || node === undefined) return undefined
        node = (node as ValueTree).get(labels[name])
      }
      return i === names.length ? (node as E | undefined) : undefined
    },
    /** After prom-client's own path created or updated the entry. */
    learn(labels: Labels): void {
      const given = Object.keys(labels)
      if (given.length !== names.length || given.some((n, i) => n !== names[i])) return
      const f = entryOf<E>(m, labels)
      if (!f) return
      let node = root
      for (let i = 0; i < last; i++) node = branch(node, labels[names[i]!])
      node.set(labels[names[last]!], f)
    },
  }
}

function withFastInc<T extends string>(c: Counter<T>): Counter<T> {
  const m = internals(c)
  if (!m) return c
  const slow = c.inc.bind(c) as (labels?: unknown, value?: unknown) => void
  const known = entries<{ value: number }>(c, m)
  c.inc = ((labels?: unknown, value?: unknown) => {
    if (
      !isLabels(labels) ||
      !(value === undefined || (typeof value === 'number' && value >= 0 && value < Infinity))
    )
      return slow(labels, value)
    const e = known.get(labels)
    if (e) e.value += value ?? 1
    else {
      slow(labels, value)
      known.learn(labels)
    }
  }) as Counter<T>['inc']
  return c
}

function withFastObserve<T extends string>(h: Histogram<T>): Histogram<T> {
  const m = internals(h)
  const bounds = (h as unknown as { upperBounds?: number[] }).upperBounds
  if (!m || !Array.isArray(bounds)) return h
  const keys = bounds.map(String)
  const slow = h.observe.bind(h) as (labels: unknown, value?: unknown) => void
  const known = entries<{ sum: number; count: number; bucketValues: Record<string, number> }>(h, m)
  h.observe = ((labels: unknown, value?: unknown) => {
    if (!isLabels(labels) || typeof value !== 'number' || !Number.isFinite(value)) return slow(labels, value)
    const e = known.get(labels)
    if (!e) {
      slow(labels, value)
      return known.learn(labels)
    }
    e.sum += value
    e.count += 1
    for (let i = 0; i < bounds.length; i++)
      if (value <= bounds[i]!) {
        e.bucketValues[keys[i]!]! += 1
        break
      }
  }) as Histogram<T>['observe']
  return h
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * `fastPaths: false` leaves prom-client's inc/observe as they are (for
 * comparing the two; the export must not differ).
 */
export function createMetrics(options: { defaultMetrics?: boolean; fastPaths?: boolean } = {}) {
  const registry = new Registry()
  const fast = options.fastPaths !== false
  const fastCounter = <T extends string>(c: Counter<T>) => (fast ? withFastInc(c) : c)
  const fastHistogram = <T extends string>(h: Histogram<T>) => (fast ? withFastObserve(h) : h)
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry })
  const r = [registry]
  return {
    registry,
    // --- edge ---
    requests: fastCounter(
      new Counter({
        name: 'pgpt:http_requests_total',
        help: 'HTTP requests by route, status and model.',
        labelNames: ['route', 'method', 'status', 'model'],
        registers: r,
      }),
    ),
    requestLatency: fastHistogram(
      new Histogram({
        name: 'pgpt:http_request_duration_seconds',
        help: 'HTTP request latency (to the last byte for streams).',
        labelNames: ['route', 'method', 'status'],
        buckets: LATENCY_BUCKETS,
        registers: r,
      }),
    ),
    timeToFirstToken: fastHistogram(
      new Histogram({
        name: 'pgpt:time_to_first_token_seconds',
        help: 'From request received to the first generated token, by model.',
        labelNames: ['model'],
        buckets: TTFT_BUCKETS,
        registers: r,
      }),
    ),
    rateLimitRejections: fastCounter(
      new Counter({
        name: 'pgpt:rate_limit_rejections_total',
        help: 'Requests refused with 429, by limit kind (requests or tokens).',
        labelNames: ['limit'],
        registers: r,
      }),
    ),
    cacheLookups: fastCounter(
      new Counter({
        name: 'pgpt:response_cache_lookups_total',
        help: 'Response cache lookups by result (hit, miss, bypass).',
        labelNames: ['result'],
        registers: r,
      }),
    ),
    // --- queue and jobs ---
    queueDepth: new Gauge({
      name: 'pgpt:queue_depth',
      help: 'Messages in the queue by state (visible, in_flight, delayed).',
      labelNames: ['queue', 'state'],
      registers: r,
    }),
    queueOldestAge: new Gauge({
      name: 'pgpt:queue_oldest_message_age_seconds',
      help: 'Age of the oldest message not yet acknowledged.',
      labelNames: ['queue'],
      registers: r,
    }),
    jobs: fastCounter(
      new Counter({
        name: 'pgpt:jobs_total',
        help: 'Job state transitions by kind and new state.',
        labelNames: ['kind', 'state'],
        registers: r,
      }),
    ),
    // --- generation ---
    promptTokens: fastCounter(
      new Counter({
        name: 'pgpt:prompt_tokens_total',
        help: 'Prompt tokens processed, by model.',
        labelNames: ['model'],
        registers: r,
      }),
    ),
    generationTokens: fastCounter(
      new Counter({
        name: 'pgpt:generation_tokens_total',
        help: 'Tokens generated, by model.',
        labelNames: ['model'],
        registers: r,
      }),
    ),
    batchSize: new Gauge({
      name: 'pgpt:batch_size',
      help: 'Sequences in the current decode batch, by model.',
      labelNames: ['model'],
      registers: r,
    }),
    batchSizeMax: new Gauge({
      name: 'pgpt:batch_size_max',
      help: 'Largest decode batch seen since start, by model.',
      labelNames: ['model'],
      registers: r,
    }),
    modelLoadSeconds: fastHistogram(
      new Histogram({
        name: 'pgpt:model_load_duration_seconds',
        help: 'Time to fetch and open a model, by model.',
        labelNames: ['model'],
        buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180],
        registers: r,
      }),
    ),
    modelCache: fastCounter(
      new Counter({
        name: 'pgpt:model_cache_requests_total',
        help: 'Model cache lookups by result (hit, miss).',
        labelNames: ['result'],
        registers: r,
      }),
    ),
    // --- webhooks ---
    webhookDeliveries: fastCounter(
      new Counter({
        name: 'pgpt:webhook_deliveries_total',
        help: 'Webhook delivery attempts by outcome (success, retry, failed, refused).',
        labelNames: ['outcome'],
        registers: r,
      }),
    ),
    webhookAttempts: fastHistogram(
      new Histogram({
        name: 'pgpt:webhook_attempts',
        help: 'Attempts a webhook delivery took until it ended.',
        buckets: [1, 2, 3, 5, 8, 13, 21],
        registers: r,
      }),
    ),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
