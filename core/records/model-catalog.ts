/**
 * The model catalog: which models a tenant may call, read from the ObjectStore
 * (`models/<id>/manifest.json`, see core/model-manifest.ts) and cached briefly.
 *
 * Token counting, used for the context-length check and tokens-per-minute:
 * when the manifest lists `tokenizer.json`, the model's own tokenizer is loaded
 * from the store with @huggingface/tokenizers (exact counts for prompts); when
 * it does not, or the tokenizer cannot be loaded, the count is an estimate of
 * ceil(characters / 4). Chat prompts add 4 tokens per message for the template.
 */
import { Tokenizer } from '@huggingface/tokenizers'
import { listManifests, type ModelManifest, manifestKey, modelPrefix } from '../model-manifest.js'
import type { ObjectStore } from '../ports/object-store.js'

export type TokenCountMethod = 'tokenizer' | 'estimate'

export interface TokenCounter {
  method: TokenCountMethod
  count(text: string): number
}

export interface ModelCatalog {
  /** Models visible to `tenant` (its own and everyone's), sorted by id. */
  list(tenant: string): Promise<ModelManifest[]>
  /** One model, or null when missing or owned by another tenant. */
  get(tenant: string, id: string): Promise<ModelManifest | null>
  /** The model's token counter (the tokenizer when published, else the estimate). */
  tokenCounter(model: ModelManifest): Promise<TokenCounter>
  /** Forgets the cached listing (after this edge deleted or published a model). */
  invalidate?(): void
}

export interface ModelCatalogOptions {
  /** How long a listing is reused. Default 5000 ms. */
  ttlMs?: number
  now?: () => number
  /** Told why a tokenizer could not be loaded. */
  onTokenizerError?: (model: string, err: unknown) => void
}

export const estimateTokens = (text: string) => Math.ceil(text.length / 4)
export const ESTIMATE: TokenCounter = { method: 'estimate', count: estimateTokens }

const visible = (m: ModelManifest, tenant: string) => m.owner === null || m.owner === tenant

export function createModelCatalog(store: ObjectStore, o: ModelCatalogOptions = {}): ModelCatalog {
  const ttl = o.ttlMs ?? 5000
  const now = o.now ?? Date.now
  let cached: { at: number; models: Promise<ModelManifest[]> } | undefined
  const counters = new Map<string, Promise<TokenCounter>>()

  const all = (): Promise<ModelManifest[]> => {
    if (!cached || now() - cached.at >= ttl) {
      const models = listManifests(store).then((list) => list.sort((a, b) => a.id.localeCompare(b.id)))
      cached = { at: now(), models }
      // A failed listing is not remembered.
      models.catch(() => {
        if (cached?.models === models) cached = undefined
      })
    }
    return cached.models
  }

  async function loadCounter(m: ModelManifest): Promise<TokenCounter> {
    if (!m.files.some((f) => f.path === 'tokenizer.json')) return ESTIMATE
    try {
      const [tok, cfg] = await Promise.all([
        store.get(modelPrefix(m.id) + 'tokenizer.json'),
        store.get(modelPrefix(m.id) + 'tokenizer_config.json'),
      ])
      if (!tok) return ESTIMATE
      const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b))
      const tokenizer = new Tokenizer(decode(tok), cfg ? decode(cfg) : {})
      return {
        method: 'tokenizer',
        count: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids.length,
      }
    } catch (err) {
      o.onTokenizerError?.(m.id, err)
      return ESTIMATE
    }
  }

  return {
    async list(tenant) {
      return (await all()).filter((m) => visible(m, tenant))
    },
    async get(tenant, id) {
      const m = (await all()).find((x) => x.id === id)
      if (m) return visible(m, tenant) ? m : null
      // Not in the cached listing: it may have been published since.
      const bytes = await store.get(manifestKey(id)).catch(() => null)
      if (!bytes) return null
      cached = undefined
      const fresh = (await all()).find((x) => x.id === id)
      return fresh && visible(fresh, tenant) ? fresh : null
    },
    invalidate() {
      cached = undefined
    },
    tokenCounter(m) {
      const key = `${m.id}@${m.created}`
      let c = counters.get(key)
      if (!c) {
        c = loadCounter(m)
        counters.set(key, c)
      }
      return c
    },
  }
}
