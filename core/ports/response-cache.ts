/**
 * ResponseCache port: stored responses of repeatable requests (temperature 0
 * or a fixed seed), keyed by a canonical hash the edge computes. Only complete,
 * successful, non-streaming responses are stored.
 */

export interface CachedResponse {
  status: number
  headers: Record<string, string>
  body: string
  /** Epoch ms when stored. */
  storedAt: number
}

export interface ResponseCache {
  readonly name: string
  get(key: string): Promise<CachedResponse | null>
  put(key: string, value: CachedResponse, ttlSeconds: number): Promise<void>
  delete(key: string): Promise<void>
}
