/**
 * Prometheus metrics (prom-client), named in the style of vLLM and TGI:
 * `pgpt:` prefix for serving metrics, seconds for time, `_total` for counters.
 * docs/operations.md has the table; keep the two in step.
 *
 * One `Metrics` object per process (edge or worker), each with its own
 * Registry so tests can create several side by side.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry()
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry })
  const r = [registry]
  return {
    registry,
    // --- edge ---
    requests: new Counter({
      name: 'pgpt:http_requests_total',
      help: 'HTTP requests by route, status and model.',
      labelNames: ['route', 'method', 'status', 'model'],
      registers: r,
    }),
    requestLatency: new Histogram({
      name: 'pgpt:http_request_duration_seconds',
      help: 'HTTP request latency (to the last byte for streams).',
      labelNames: ['route', 'method', 'status'],
      buckets: LATENCY_BUCKETS,
      registers: r,
    }),
    timeToFirstToken: new Histogram({
      name: 'pgpt:time_to_first_token_seconds',
      help: 'From request received to the first generated token, by model.',
      labelNames: ['model'],
      buckets: TTFT_BUCKETS,
      registers: r,
    }),
    rateLimitRejections: new Counter({
      name: 'pgpt:rate_limit_rejections_total',
      help: 'Requests refused with 429, by limit kind (requests or tokens).',
      labelNames: ['limit'],
      registers: r,
    }),
    cacheLookups: new Counter({
      name: 'pgpt:response_cache_lookups_total',
      help: 'Response cache lookups by result (hit, miss, bypass).',
      labelNames: ['result'],
      registers: r,
    }),
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
    jobs: new Counter({
      name: 'pgpt:jobs_total',
      help: 'Job state transitions by kind and new state.',
      labelNames: ['kind', 'state'],
      registers: r,
    }),
    // --- generation ---
    promptTokens: new Counter({
      name: 'pgpt:prompt_tokens_total',
      help: 'Prompt tokens processed, by model.',
      labelNames: ['model'],
      registers: r,
    }),
    generationTokens: new Counter({
      name: 'pgpt:generation_tokens_total',
      help: 'Tokens generated, by model.',
      labelNames: ['model'],
      registers: r,
    }),
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
    modelLoadSeconds: new Histogram({
      name: 'pgpt:model_load_duration_seconds',
      help: 'Time to fetch and open a model, by model.',
      labelNames: ['model'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180],
      registers: r,
    }),
    modelCache: new Counter({
      name: 'pgpt:model_cache_requests_total',
      help: 'Model cache lookups by result (hit, miss).',
      labelNames: ['result'],
      registers: r,
    }),
    // --- webhooks ---
    webhookDeliveries: new Counter({
      name: 'pgpt:webhook_deliveries_total',
      help: 'Webhook delivery attempts by outcome (success, retry, failed, refused).',
      labelNames: ['outcome'],
      registers: r,
    }),
    webhookAttempts: new Histogram({
      name: 'pgpt:webhook_attempts',
      help: 'Attempts a webhook delivery took until it ended.',
      buckets: [1, 2, 3, 5, 8, 13, 21],
      registers: r,
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
