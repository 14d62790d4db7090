/**
 * One webhook HTTP attempt: POST over node:http(s) to addresses the SSRF guard
 * already checked (a custom `lookup` pins the connection to them, so DNS is not
 * asked again: no rebinding). Redirects are not followed (a 3xx is a failed
 * attempt), the whole attempt is bounded by `timeoutMs`, and at most 4 KiB of
 * the response body is read (kept for the delivery log).
 */
import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import type { ResolvedAddress } from './ssrf.js'

export interface SendResult {
  status: number
  body: string
}

export interface SendOptions {
  url: string
  addresses: ResolvedAddress[]
  headers: Record<string, string>
  body: string
  timeoutMs: number
}

function pinnedLookup(addresses: ResolvedAddress[]): LookupFunction {
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all) callback(null, addresses)
    else callback(null, addresses[0].address, addresses[0].family)
  }) as unknown as LookupFunction
}

export function sendWebhook(o: SendOptions): Promise<SendResult> {
  const u = new URL(o.url)
  const mod = u.protocol === 'https:' ? https : http
  return new Promise((resolve, reject) => {
    const req = mod.request(
      u,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(o.body)),
          'user-agent': 'PrometheusGPT-Webhooks/1',
          ...o.headers,
        },
        lookup: pinnedLookup(o.addresses),
        signal: AbortSignal.timeout(o.timeoutMs),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          if (size < 4096) chunks.push(c)
          size += c.length
        })
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8').slice(0, 4096),
          }),
        )
        res.on('error', reject)
      },
    )
    req.on('error', (err) =>
      reject(
        err.name === 'AbortError' ? new Error(`timed out after ${o.timeoutMs} ms`, { cause: err }) : err,
      ),
    )
    req.end(o.body)
  })
}
