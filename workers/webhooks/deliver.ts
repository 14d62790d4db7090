/**
 * One signed webhook attempt: the SSRF guard, the Standard Webhooks signature
 * and headers, one POST. Shared by the worker's WebhookDispatcher (which keeps
 * its retries in the durable DeliveryLog) and the AWS dead-letter Lambda
 * (functions/dead-letter.ts, which retries through SQS redelivery), so a
 * receiver sees the same body, headers and webhook-id from either.
 */
import { Webhook } from 'standardwebhooks'
import type { WebhookEvent } from '../../core/ports/delivery-log.js'
import { sendWebhook } from './send.js'
import { type ResolveAll, resolveWebhookTarget, SsrfError } from './ssrf.js'

export interface SignedDelivery {
  /** The webhook-id: fixed per event (dispatcher.ts webhookId), the same on every retry. */
  id: string
  event: WebhookEvent
  url: string
  /** The JSON body, signed as sent. */
  payload: string
  requestId?: string | null
}

export interface AttemptOptions {
  /** The tenant's `whsec_…` secret. */
  secret: string
  timeoutMs: number
  allowPrivate?: boolean
  resolve?: ResolveAll
}

export type AttemptResult =
  | { outcome: 'delivered'; status: number }
  /** Non-2xx, timeout or network error: worth another try. */
  | { outcome: 'retry'; status: number | null; error: string }
  /** The SSRF guard refused the URL: never worth another try. */
  | { outcome: 'refused'; status: null; error: string }

export async function attemptDelivery(d: SignedDelivery, o: AttemptOptions): Promise<AttemptResult> {
  try {
    const addresses = await resolveWebhookTarget(d.url, { allowPrivate: o.allowPrivate, resolve: o.resolve })
    const timestamp = new Date()
    const signature = new Webhook(o.secret).sign(d.id, timestamp, d.payload)
    const res = await sendWebhook({
      url: d.url,
      addresses,
      body: d.payload,
      timeoutMs: o.timeoutMs,
      headers: {
        'webhook-id': d.id,
        'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
        'webhook-signature': signature,
        'pgpt-webhook-event': d.event,
        // The request that created the job, so a receiver's logs join ours.
        ...(d.requestId ? { 'x-request-id': d.requestId } : {}),
      },
    })
    if (res.status >= 200 && res.status < 300) return { outcome: 'delivered', status: res.status }
    return {
      outcome: 'retry',
      status: res.status,
      error: `HTTP ${res.status}${res.status >= 300 && res.status < 400 ? ' (redirects are not followed)' : ''}`,
    }
  } catch (err) {
    if (err instanceof SsrfError) return { outcome: 'refused', status: null, error: err.message }
    return { outcome: 'retry', status: null, error: (err as Error).message || String(err) }
  }
}
