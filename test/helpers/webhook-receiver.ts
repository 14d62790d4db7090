/**
 * A real webhook receiver for tests: a node:http server on 127.0.0.1 that
 * records each request and answers with the status `respond` picks.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Received {
  path: string
  headers: IncomingHttpHeaders
  body: string
  at: number
}

export interface Receiver {
  url: string
  port: number
  received: Received[]
  /** Answer for the n-th request (0-based); 'hang' never answers. */
  respond: (n: number, req: Received) => number | 'hang'
  close(): Promise<void>
}

export async function startReceiver(respond: Receiver['respond'] = () => 200): Promise<Receiver> {
  const received: Received[] = []
  const r: Receiver = { url: '', port: 0, received, respond, close: async () => {} }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const rec = {
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      }
      const n = received.length
      received.push(rec)
      const status = r.respond(n, rec)
      if (status === 'hang') return
      if (status >= 300 && status < 400) res.setHeader('location', '/redirected')
      res.statusCode = status
      res.end(status < 300 ? 'ok' : 'nope')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  r.port = (server.address() as AddressInfo).port
  r.url = `http://127.0.0.1:${r.port}/hook`
  r.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  return r
}
