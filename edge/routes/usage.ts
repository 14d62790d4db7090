/**
 * GET /v1/usage: metered usage summed from the usage records (never from
 * counters), in time buckets, optionally grouped by API key or model, as JSON
 * or CSV (`format=csv`). A key sees its own tenant's usage (a tenant's admin
 * key too); an operator key sees every tenant's unless it names one with
 * `tenant`.
 *
 * What is counted: every completed generation (synchronous, streamed — also
 * when the client did not ask for the usage chunk —, async job), a generation
 * canceled because its client went away (the tokens it generated until then),
 * and cache hits, which count as requests with their tokens and are flagged
 * `cached` in the records (the tokens were served, though not computed again).
 */
import { createRoute, z } from '@hono/zod-openapi'
import { badRequest, forbidden } from '../../core/errors.js'
import { authErrors, errorResponseOf } from '../../core/openai/schemas.js'
import type { UsageBucket } from '../../core/ports/usage-store.js'
import { hasScope } from '../keys.js'
import { anyKey } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, security, valid } from './util.js'

const WIDTHS = { '1m': 60, '1h': 3600, '1d': 86_400 } as const
/** Most buckets one query may ask for (a year of days, a week of hours). */
export const MAX_BUCKETS = 400

/**
 * A time in epoch seconds. Parsed from the query string as digits (not
 * z.coerce.number(), which turns a missing value into NaN and reports
 * "expected number, received NaN"): a missing value is reported as missing,
 * a bad one as what it should look like, both naming the parameter.
 */
const epochSeconds = z
  .string()
  .regex(/^\d{1,15}$/, 'must be a time in epoch seconds, a whole number such as 1760000000')
  .transform(Number)

const query = z.object({
  start_time: epochSeconds.openapi({
    type: 'integer',
    description: 'Start, epoch seconds (inclusive).',
    example: 1_760_000_000,
  }),
  end_time: epochSeconds
    .optional()
    .openapi({ type: 'integer', description: 'End, epoch seconds (exclusive). Default: now.' }),
  bucket_width: z.enum(['1m', '1h', '1d']).default('1d'),
  group_by: z.enum(['api_key', 'model']).optional(),
  tenant: z
    .string()
    .min(1)
    .max(128)
    .optional()
    .openapi({ description: 'Operator keys only: one tenant (default: every tenant).' }),
  format: z.enum(['json', 'csv']).default('json'),
})
type Query = z.infer<typeof query>

const result = z.object({
  object: z.literal('usage.result'),
  num_model_requests: z.number().int(),
  input_tokens: z.number().int(),
  output_tokens: z.number().int(),
  trained_tokens: z.number().int(),
  api_key_id: z.string().nullable(),
  model: z.string().nullable(),
})

const bucket = z.object({
  object: z.literal('bucket'),
  start_time: z.number().int(),
  end_time: z.number().int(),
  results: z.array(result),
})

const route = createRoute({
  method: 'get',
  path: '/v1/usage',
  tags: ['Usage'],
  summary: 'Usage in time buckets',
  description:
    'Requests and tokens summed from usage records. `format=csv` returns text/csv with one row per bucket and group.',
  security,
  ...anyKey,
  request: { query },
  responses: {
    200: {
      description: 'Buckets with usage, oldest first (empty buckets are left out).',
      content: {
        'application/json': {
          schema: z.object({ object: z.literal('page'), data: z.array(bucket), has_more: z.literal(false) }),
        },
        'text/csv': { schema: z.string() },
      },
    },
    400: errorResponseOf('Invalid time range or bucket width.'),
    ...authErrors,
  },
})

export function registerUsage(app: EdgeApp, { deps }: RouteContext) {
  app.openapi(
    route,
    h(async (c) => {
      const q = valid<Query>(c, 'query')
      const key = c.get('key')
      const operator = hasScope(key, 'operator')
      if (q.tenant && !operator && q.tenant !== key.tenant)
        throw forbidden("Only operator keys may read another tenant's usage.")
      const width = WIDTHS[q.bucket_width]
      const from = q.start_time * 1000
      const to = (q.end_time ?? Math.ceil(Date.now() / 1000)) * 1000
      if (to <= from) throw badRange('end_time must be after start_time.', 'end_time')
      if ((to - from) / (width * 1000) > MAX_BUCKETS)
        throw badRange(`At most ${MAX_BUCKETS} buckets per query: widen bucket_width or shorten the range.`)
      const tenant = operator ? q.tenant : key.tenant
      const rows = await deps.usage.query({
        ...(tenant ? { tenant } : {}),
        from,
        to,
        bucketSeconds: width,
        ...(q.group_by ? { groupBy: q.group_by } : {}),
      })
      if (q.format === 'csv')
        return c.body(toCsv(rows, q.group_by), 200, {
          'content-type': 'text/csv; charset=utf-8',
          'content-disposition': 'attachment; filename="usage.csv"',
        })
      return json(c, { object: 'page', data: toBuckets(rows, q.group_by), has_more: false })
    }),
  )
}

const badRange = (message: string, param = 'start_time') => badRequest(message, param)

const secs = (ms: number) => Math.floor(ms / 1000)

function toBuckets(rows: UsageBucket[], groupBy: Query['group_by']) {
  const byStart = new Map<number, z.infer<typeof bucket>>()
  for (const r of rows) {
    let b = byStart.get(r.start)
    if (!b) {
      b = { object: 'bucket', start_time: secs(r.start), end_time: secs(r.end), results: [] }
      byStart.set(r.start, b)
    }
    b.results.push({
      object: 'usage.result',
      num_model_requests: r.requests,
      input_tokens: r.promptTokens,
      output_tokens: r.completionTokens,
      trained_tokens: r.trainedTokens,
      api_key_id: groupBy === 'api_key' ? (r.group ?? null) : null,
      model: groupBy === 'model' ? (r.group ?? null) : null,
    })
  }
  return [...byStart.values()]
}

/** CSV per RFC 4180: fields with a comma, quote or newline are quoted, quotes doubled. */
function toCsv(rows: UsageBucket[], groupBy: Query['group_by']): string {
  const cell = (v: string | number) => {
    const s = String(v)
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s
  }
  const header = [
    'start_time',
    'end_time',
    ...(groupBy ? [groupBy] : []),
    'requests',
    'input_tokens',
    'output_tokens',
    'trained_tokens',
  ]
  const lines = rows.map((r) =>
    [
      secs(r.start),
      secs(r.end),
      ...(groupBy ? [r.group ?? ''] : []),
      r.requests,
      r.promptTokens,
      r.completionTokens,
      r.trainedTokens,
    ]
      .map(cell)
      .join(','),
  )
  return `${[header.join(','), ...lines].join('\r\n')}\r\n`
}
