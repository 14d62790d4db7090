/**
 * The edge on Node: createApp served by @hono/node-server, wired to the
 * adapters the config names (by default the local profile: SQLite queue, job
 * records, keys and usage in <PGPT_DATA_DIR>/pgpt.db, a folder object store,
 * the in-process events hub, in-memory rate limiter and response cache) unless
 * deps are passed in. Run directly (`tsx edge/node.ts`) or call startEdge().
 *
 *   const edge = await startEdge({ config, deps: { keys } })   // port 0: any free port
 *   console.log(edge.url); await edge.close()
 */
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { getConnInfo } from '@hono/node-server/conninfo'
import { MemoryEvents } from '../core/adapters/memory-events.js'
import { MemoryRateLimiter } from '../core/adapters/memory-rate-limiter.js'
import { MemoryResponseCache } from '../core/adapters/memory-response-cache.js'
import type { Config } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger } from '../core/logger.js'
import { createMetrics } from '../core/metrics.js'
import { createModelCatalog } from '../core/records/model-catalog.js'
import { retentionPolicy, type Sweeper, startSweeper } from '../core/retention.js'
import { loadOrCreateSigningKey, tenantWebhookSecret } from '../core/webhook-secrets.js'
import { openWiring } from '../core/wiring.js'
import { nodeBackends } from '../core/wiring-node.js'
import { createApp } from './app.js'
import type { EdgeDeps } from './deps.js'
import { ensureKey } from './keys.js'
import { serveEdge } from './node-server.js'

export interface StartEdgeOptions {
  /** Default: loadConfig() (process.env and PGPT_CONFIG_FILE). */
  config?: Config
  /** Replace any of the default local adapters. */
  deps?: Partial<EdgeDeps>
  /** Default: config.PORT; 0 picks a free port. */
  port?: number
  hostname?: string
}

export interface RunningEdge {
  url: string
  port: number
  app: ReturnType<typeof createApp>
  deps: EdgeDeps
  /** The retention sweeper (PGPT_CLEANUP_INTERVAL_S > 0). */
  sweeper?: Sweeper
  close(): Promise<void>
}

/**
 * Adapters as the config names them (core/wiring.ts with Node's backends):
 * PGPT_QUEUE (local SQLite | sqs), PGPT_STORE (fs | s3), PGPT_RECORDS
 * (sqlite: jobs, keys and usage in <PGPT_DATA_DIR>/pgpt.db | object: over
 * the object store, shared with Lambda and Workers). Events: the in-process
 * hub (workers in other processes publish through POST /internal/events).
 */
export async function createLocalDeps(config: Config): Promise<EdgeDeps & { close(): Promise<void> }> {
  const logger = createLogger({ service: 'edge', level: config.PGPT_LOG_LEVEL })
  const wiring = openWiring(config, nodeBackends(config))
  const { store } = wiring
  const records = wiring.records()
  const models = createModelCatalog(store, {
    onTokenizerError: (model, err) => logger.warn({ model, err }, 'tokenizer not loaded; estimating tokens'),
  })
  return {
    queue: wiring.queue().queue,
    jobs: records.jobs,
    events: new MemoryEvents(),
    store,
    keys: records.keys,
    rateLimiter: new MemoryRateLimiter(),
    cache: new MemoryResponseCache(),
    usage: records.usage,
    config,
    logger,
    metrics: createMetrics({ defaultMetrics: true }),
    models,
    ...webhookSigning(config),
    close: () => wiring.close(),
  }
}

/**
 * Tenants' webhook secrets come from the same signing key the workers sign
 * with: PGPT_WEBHOOK_SIGNING_KEY, or in the local profile the key file the
 * workers create in the data folder.
 */
function webhookSigning(config: Config): Pick<EdgeDeps, 'webhookSecret'> {
  const configured = config.PGPT_WEBHOOK_SIGNING_KEY
  if (!configured && config.PGPT_PROFILE !== 'local') return {}
  let key = configured
  return {
    webhookSecret: async (tenant) => {
      key ??= loadOrCreateSigningKey(join(config.PGPT_DATA_DIR, 'webhook-signing-key'))
      return tenantWebhookSecret(key, tenant)
    },
  }
}

export async function startEdge(o: StartEdgeOptions = {}): Promise<RunningEdge> {
  const config = o.config ?? loadConfig()
  const local = o.deps && isComplete(o.deps) ? undefined : await createLocalDeps(config)
  const deps: EdgeDeps = {
    // The socket's peer names the client (the per-address limit of requests without a valid key).
    clientAddress: (c) => getConnInfo(c).remote.address,
    ...(local as EdgeDeps),
    ...o.deps,
    config,
  }
  if (config.PGPT_API_KEY) await ensureKey(deps.keys, config.PGPT_API_KEY)
  const app = createApp(deps)
  const hostname = o.hostname ?? config.HOST
  const server = await new Promise<ReturnType<typeof serveEdge>>((resolve) => {
    const s = serveEdge({ fetch: app.fetch, port: o.port ?? config.PORT, hostname }, () => resolve(s))
  })
  const port = (server.address() as AddressInfo).port
  const url = `http://${hostname.includes(':') ? `[${hostname}]` : hostname}:${port}`
  deps.logger.info({ url }, 'edge listening')
  // Retention (core/retention.ts): the Node edge is one per stack (`npm start`, compose), so it sweeps.
  const sweeper =
    config.PGPT_CLEANUP_INTERVAL_S > 0
      ? startSweeper(
          { store: deps.store, jobs: deps.jobs, logger: deps.logger },
          {
            ...retentionPolicy(config),
            intervalMs: config.PGPT_CLEANUP_INTERVAL_S * 1000,
            clock: deps.clock,
          },
        )
      : undefined
  return {
    url,
    port,
    app,
    deps,
    sweeper,
    async close() {
      await sweeper?.stop()
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
      })
      await local?.close()
    },
  }
}

const REQUIRED: Array<keyof EdgeDeps> = [
  'queue',
  'jobs',
  'events',
  'store',
  'keys',
  'rateLimiter',
  'cache',
  'usage',
  'logger',
  'metrics',
  'models',
]
const isComplete = (d: Partial<EdgeDeps>) => REQUIRED.every((k) => d[k] !== undefined)

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const edge = await startEdge()
  const stop = () => void edge.close().then(() => process.exit(0))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
