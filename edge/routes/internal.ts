/**
 * POST /internal/events: worker processes publish job events into this
 * edge's Events hub. Bearer PGPT_INTERNAL_TOKEN, compared in constant time;
 * without a configured token the route answers 404 (it does not exist).
 */
import { createRoute, z } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { ApiError, tooLarge, unauthorized } from '../../core/errors.js'
import type { JobEvent } from '../../core/ports/events.js'
import { terminalEventOf } from '../generation/run.js'
import { sha256Hex, timingSafeEqualString } from '../keys.js'
import { bearerToken } from '../middleware/auth/index.js'
import { type EdgeApp, h, json, type RouteContext, valid } from './util.js'

export const jobEventSchema = z.object({
  jobId: z.string().min(1).max(128),
  /** The run that published it (core/ports/events.ts); a worker older than runs sends none: its run 1. */
  run: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(1),
  seq: z.number().int().min(0),
  type: z.enum(['start', 'token', 'progress', 'output', 'completed', 'failed', 'canceled']),
  data: z.unknown(),
  at: z.number(),
  /**
   * A terminal event too big for one request comes without its data (core/adapters/http-events.ts):
   * the worker wrote it into the job record first, and it is read from there.
   */
  dataInRecord: z.literal(true).optional(),
})

const publish = createRoute({
  method: 'post',
  path: '/internal/events',
  hide: true,
  request: {
    body: {
      required: true,
      content: { 'application/json': { schema: z.array(jobEventSchema).max(10_000) } },
    },
  },
  responses: { 200: { description: 'Published.' } },
})

export function registerInternal(app: EdgeApp, { deps }: RouteContext) {
  const token = deps.config.PGPT_INTERNAL_TOKEN
  const tokenHash = token ? sha256Hex(token) : null
  const maxBytes = deps.config.PGPT_MAX_INTERNAL_BODY_BYTES
  const internalLimit = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw tooLarge(`The request body exceeds ${maxBytes} bytes (PGPT_MAX_INTERNAL_BODY_BYTES).`)
    },
  })
  app.use('/internal/*', async (c, next) => {
    if (!tokenHash) throw new ApiError(404, 'Unknown request URL.', { code: 'unknown_url' })
    const given = bearerToken(c.req.header('authorization'))
    // Compare digests: equal length, constant time, nothing learned from the length of the guess.
    if (!given || !timingSafeEqualString(await sha256Hex(given), await tokenHash))
      throw unauthorized('Invalid internal token.', 'invalid_internal_token')
    // Its own limit, not the public PGPT_MAX_BODY_BYTES: a big job's events are megabytes
    // (edge/app.ts exempts this route); read only once the token was checked.
    await internalLimit(c, next)
  })
  app.openapi(
    publish,
    h(async (c) => {
      const events = await Promise.all(
        valid<Array<JobEvent & { dataInRecord?: true }>>(c, 'json').map(async ({ dataInRecord, ...e }) => {
          if (!dataInRecord) return e
          const recorded = terminalEventOf(await deps.jobs.getById(e.jobId))
          return { ...e, data: recorded?.type === e.type ? recorded.data : null }
        }),
      )
      // Adapters that take a batch (the Durable Object hub) get one call per job; others one per event, in order.
      const hub = deps.events as { publishMany?: (e: JobEvent[]) => Promise<void> }
      if (hub.publishMany) await hub.publishMany(events)
      else for (const e of events) await deps.events.publish(e)
      return json(c, { accepted: events.length })
    }),
  )
}
