/**
 * The worker's small HTTP server: `GET /metrics` (Prometheus text; bearer
 * PGPT_METRICS_TOKEN when set) and `GET /health` (200 while the loop runs,
 * 503 once shutdown began, so an orchestrator stops routing and waits).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'

export interface WorkerServerOptions {
  port: number
  host: string
  registry: Registry
  metricsToken?: string
  health: () => { ok: boolean; [k: string]: unknown }
}

const digest = (s: string) => createHash('sha256').update(s).digest()

export async function startWorkerServer(
  o: WorkerServerOptions,
): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET') {
      res.writeHead(405).end()
      return
    }
    if (path === '/health') {
      const h = o.health()
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h))
      return
    }
    if (path === '/metrics') {
      if (o.metricsToken) {
        const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
        if (!timingSafeEqual(digest(given), digest(o.metricsToken))) {
          res.writeHead(401).end()
          return
        }
      }
      try {
        const body = await o.registry.metrics()
        res.writeHead(200, { 'content-type': o.registry.contentType }).end(body)
      } catch {
        res.writeHead(500).end()
      }
      return
    }
    res.writeHead(404).end()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, resolve)
  })
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
