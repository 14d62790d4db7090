/**
 * The edge's HTTP server on Node: @hono/node-server's serve(), plus one rule
 * for responses that go out before the request body has been read — an
 * oversized body's 413, a bad key's 401, a 429, a 415 — on keep-alive
 * connections (undici/fetch and the openai SDK pool them).
 *
 * Unread body bytes are still on the wire, so such a connection can be kept
 * only once the rest of the body has been read. @hono/node-server's own
 * clean-up (autoCleanupIncoming) got this wrong: it answered
 * `Connection: keep-alive`, then tried to drain the body — but when the app had
 * begun reading it through a web stream (hono's body-limit and c.req.raw.body
 * do), that stream paused the request again after every chunk — and after
 * 500 ms destroyed the socket, taking the oversized request's 413 and the
 * requests the client had queued on that connection with it (UND_ERR_SOCKET).
 * So it is off, and this module owns the rule, decided when the response's
 * head is written:
 *
 * - a body that has fully arrived (read or not) needs nothing;
 * - a body of known length up to DRAIN_MAX_BYTES keeps the connection: once
 *   the response is sent, the rest is read and dropped (DRAIN_TIMEOUT_MS at
 *   most, then the socket is closed);
 * - a larger body, or one of unknown length (chunked), gets
 *   `Connection: close`; after the response the socket half-closes and keeps
 *   reading (and dropping) until the client stops sending, at most LINGER_MS —
 *   a "lingering close" (RFC 9112 §9.6): closing at once would answer the
 *   client's next bytes with a TCP reset, which may erase the response before
 *   the client reads it.
 *
 * Only the Node entry needs this: on Cloudflare Workers (edge/worker.ts) and
 * Lambda (functions/) the platform owns the client's connection and reads or
 * discards the request body itself.
 */
import { type IncomingMessage, type Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'

const MiB = 1_048_576
/** Unread bodies up to this length are read to their end, so the connection can be kept. */
export const DRAIN_MAX_BYTES = 4 * MiB
/** A drained body that has not arrived by then closes its connection. */
export const DRAIN_TIMEOUT_MS = 10_000
/** How long a closing connection keeps reading after its response. */
export const LINGER_MS = 2_000

export interface ServeEdgeOptions {
  fetch: Parameters<typeof serve>[0]['fetch']
  port?: number
  hostname?: string
}

/** serve() from @hono/node-server (HTTP/1.1), with the rule above for responses sent before their body is read. */
export function serveEdge(options: ServeEdgeOptions, listening?: (info: AddressInfo) => void): Server {
  return serve(
    { ...options, autoCleanupIncoming: false, serverOptions: { ServerResponse: EarlyAnswerAwareResponse } },
    listening,
  ) as Server
}

/**
 * Node's response, deciding at the head (every response writes one: writeHead
 * directly, or through _implicitHeader on the first write) what becomes of
 * the connection when the request body is not all in.
 */
class EarlyAnswerAwareResponse<
  Request extends IncomingMessage = IncomingMessage,
> extends ServerResponse<Request> {
  override writeHead(statusCode: number, ...rest: unknown[]): this {
    if (!this.headersSent) settleUnreadBody(this)
    return (ServerResponse.prototype.writeHead as (this: this, ...args: unknown[]) => this).call(
      this,
      statusCode,
      ...rest,
    )
  }
}

function settleUnreadBody(res: ServerResponse): void {
  const req = res.req
  if (req.complete) return
  // No Content-Length nor Transfer-Encoding: no body (RFC 9112 §6.3).
  const chunked = req.headers['transfer-encoding'] !== undefined
  const length = chunked ? Number.NaN : Number(req.headers['content-length'] ?? 0)
  if (length <= DRAIN_MAX_BYTES) {
    res.once('finish', () => drain(req))
    return
  }
  res.setHeader('connection', 'close')
  // For a `Connection: close` response Node ends the socket once it is sent
  // with socket.destroySoon() (end, then destroy at once); this one lingers.
  const socket = req.socket
  socket.destroySoon = () => lingeringClose(req)
}

/** Read and drop the rest of the body; the connection then serves the client's next request. */
function drain(req: IncomingMessage): void {
  if (req.complete) return
  discardBody(req)
  const timer = setTimeout(() => req.socket.destroy(), DRAIN_TIMEOUT_MS)
  timer.unref()
  req.once('end', () => clearTimeout(timer))
}

/**
 * Half-close once the response is out, read and drop what the client still
 * sends, and close when it stops (all the body came, or it closed its side) or
 * after LINGER_MS.
 */
function lingeringClose(req: IncomingMessage): void {
  const socket = req.socket
  discardBody(req)
  socket.end()
  const close = () => socket.destroy()
  const sent = () => {
    if (req.complete || socket.readableEnded) return close()
    const timer = setTimeout(close, LINGER_MS)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
    socket.once('end', close)
    req.once('end', close)
  }
  if (socket.writableFinished) sent()
  else socket.once('finish', sent)
}

/**
 * What Node's own IncomingMessage#_dump does for a body nobody began to read:
 * drop the readers (a web stream over the request would pause it again) and
 * let the bytes flow.
 */
function discardBody(req: IncomingMessage): void {
  req.removeAllListeners('data')
  req.resume()
}
