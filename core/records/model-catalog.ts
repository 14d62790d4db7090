/**
 * The model catalog: which models a tenant may call, read from the ObjectStore
 * (`models/<id>/manifest.json`, see core/model-manifest.ts).
 *
 * Freshness. A model published or deleted by another process (`pgpt model
 * publish`, another edge, a worker publishing a fine-tune) must show on the
 * next request, yet a full listing reads every manifest. So the listing is
 * kept, and:
 * - list() and all() first HEAD the models' generation marker
 *   (`models/.generation`, rewritten by every publish and delete) and list
 *   again when its etag differs from the one the kept listing was read under
 *   — one small read per GET /v1/models, none for the listing itself;
 * - get() answers a model found in the kept listing with no store read at all
 *   (the completion path); a model not in it is looked up by its manifest, and
 *   when found the listing is read again;
 * - whatever the marker says, a listing is not kept longer than ttlMs (a
 *   writer that bypasses the marker, e.g. files copied into the bucket by
 *   hand). So get() of a model replaced or deleted by another process may
 *   answer the old manifest for up to ttlMs.
 *
 * Token counting, used for the context-length check and tokens-per-minute:
 * when the manifest lists `tokenizer.json`, the model's own tokenizer is loaded
 * from the store with @huggingface/tokenizers (exact counts for prompts); when
 * it does not, or the tokenizer cannot be loaded, the count is an estimate of
 * ceil(characters / 4). Chat prompts add 4 tokens per message for the template.
 *
 * A tenant's tokenizer runs on this event loop, so it is bounded (issue 20):
 * one whose regexes would backtrack without bound (published before
 * models/byo/text-safety.ts checked them at publish) is not loaded — the
 * count is estimated — and it is handed at most MAX_TOKENIZED_CHARS
 * characters of one text, the rest estimated: the patterns publish lets
 * through may still be quadratic in a search (Llama 3's `\s*[\r\n]+`).
 */
import { Tokenizer } from '@huggingface/tokenizers'
import { tokenizerRegexProblems } from '../../models/byo/text-safety.js'
import {
  listManifests,
  type ModelManifest,
  manifestKey,
  modelPrefix,
  modelsGeneration,
} from '../model-manifest.js'
import type { ObjectStore } from '../ports/object-store.js'

export type TokenCountMethod = 'tokenizer' | 'estimate'

export interface TokenCounter {
  method: TokenCountMethod
  count(text: string): number
  /**
   * The most characters one token can stand for: the longest piece of the
   * vocabulary (a byte-level piece's length is the bytes it covers, at least
   * the characters). A text of more than n × this characters has more than n
   * tokens, which the context check uses to refuse an oversized prompt
   * without tokenizing it.
   */
  maxTokenChars: number
}

/** Characters per token assumed when a tokenizer's vocabulary cannot be read (generous for BPE vocabularies). */
export const FALLBACK_MAX_TOKEN_CHARS = 64

/**
 * The longest piece of a tokenizer.json's vocabulary and added tokens (BPE/WordPiece maps, Unigram
 * lists). Where one unknown token can stand for a run of any length (WordLevel and WordPiece
 * words, `fuse_unk`), no piece bounds it: at least FALLBACK_MAX_TOKEN_CHARS then, so only a prompt
 * made mostly of unknown runs longer than that could be refused although it fits.
 */
export function longestTokenChars(tokenizer: unknown): number {
  const t = tokenizer as {
    model?: { type?: unknown; vocab?: unknown; fuse_unk?: unknown }
    added_tokens?: Array<{ content?: unknown }>
  }
  const v = t?.model?.vocab
  const pieces: unknown[] = Array.isArray(v)
    ? v.map((e) => (Array.isArray(e) ? e[0] : e))
    : v && typeof v === 'object'
      ? Object.keys(v)
      : []
  if (!pieces.length) return FALLBACK_MAX_TOKEN_CHARS
  let n = 1
  for (const p of pieces) if (typeof p === 'string' && p.length > n) n = p.length
  for (const a of t.added_tokens ?? [])
    if (typeof a?.content === 'string' && a.content.length > n) n = a.content.length
  const m = t.model
  const unboundedUnknown = m?.type === 'WordLevel' || m?.type === 'WordPiece' || m?.fuse_unk === true
  return unboundedUnknown ? Math.max(n, FALLBACK_MAX_TOKEN_CHARS) : n
}

export interface ModelCatalog {
  /** Models visible to `tenant` (its own and everyone's), sorted by id; current as of this call. */
  list(tenant: string): Promise<ModelManifest[]>
  /** Every model whatever its owner, sorted by id; current as of this call (readiness, never shown to a tenant). */
  all(): Promise<ModelManifest[]>
  /** One model, or null when missing or owned by another tenant. */
  get(tenant: string, id: string): Promise<ModelManifest | null>
  /** The model's token counter (the tokenizer when published, else the estimate). */
  tokenCounter(model: ModelManifest): Promise<TokenCounter>
  /** Forgets the cached listing (after this edge deleted or published a model). */
  invalidate?(): void
}

export interface ModelCatalogOptions {
  /** The longest a listing is reused, even when the generation marker did not change. Default 5000 ms. */
  ttlMs?: number
  now?: () => number
  /** Told why a tokenizer could not be loaded. */
  onTokenizerError?: (model: string, err: unknown) => void
}

export const estimateTokens = (text: string) => Math.ceil(text.length / 4)

/** The most characters of one text a tenant's (non-bundled) tokenizer is given; ~0.2 s for a quadratic pattern. */
export const MAX_TOKENIZED_CHARS = 16_384
export const ESTIMATE: TokenCounter = { method: 'estimate', count: estimateTokens, maxTokenChars: 4 }

const visible = (m: ModelManifest, tenant: string) => m.owner === null || m.owner === tenant
const FAILED = Symbol('marker read failed')

export function createModelCatalog(store: ObjectStore, o: ModelCatalogOptions = {}): ModelCatalog {
  const ttl = o.ttlMs ?? 5000
  const now = o.now ?? Date.now
  /** The kept listing, and the marker version it was read under (undefined: unknown, the read failed). */
  let cached:
    | { at: number; marker: Promise<string | null | undefined>; models: Promise<ModelManifest[]> }
    | undefined
  const counters = new Map<string, Promise<TokenCounter>>()

  const load = () => {
    // The marker is read before the listing: a change made while listing shows as a new marker next time.
    const marker = modelsGeneration(store).catch(() => undefined)
    const models = marker
      .then(() => listManifests(store))
      .then((list) => list.sort((a, b) => a.id.localeCompare(b.id)))
    const entry = { at: now(), marker, models }
    cached = entry
    // A failed listing is not remembered.
    models.catch(() => {
      if (cached === entry) cached = undefined
    })
    return entry
  }
  const young = (c: typeof cached): c is NonNullable<typeof cached> => !!c && now() - c.at < ttl

  /** The kept listing while it is young: no store read (get()'s hit path). */
  const kept = (): Promise<ModelManifest[]> => (young(cached) ? cached : load()).models

  /** The listing as of now: one HEAD of the marker, and a new listing only when it changed. */
  async function current(): Promise<ModelManifest[]> {
    const c = cached
    if (!young(c)) return load().models
    const mark = await modelsGeneration(store).catch(() => FAILED)
    // The marker cannot be read: the kept listing, young as it is, is the best answer.
    if (mark === FAILED) return c.models
    if (mark === (await c.marker) && cached === c) return c.models
    // Changed since it was read. A load begun after this call began is as current as this call needs.
    return cached !== c && young(cached) ? cached.models : load().models
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
      const json = decode(tok)
      const tenant = m.source !== 'bundled'
      if (tenant) {
        const unsafe = tokenizerRegexProblems(json)
        if (unsafe.length) throw new Error(unsafe.join('; '))
      }
      const tokenizer = new Tokenizer(json, cfg ? decode(cfg) : {})
      const exact = (text: string) => tokenizer.encode(text, { add_special_tokens: false }).ids.length
      return {
        method: 'tokenizer',
        maxTokenChars: longestTokenChars(json),
        count: (text) =>
          !tenant || text.length <= MAX_TOKENIZED_CHARS
            ? exact(text)
            : exact(text.slice(0, MAX_TOKENIZED_CHARS)) + estimateTokens(text.slice(MAX_TOKENIZED_CHARS)),
      }
    } catch (err) {
      o.onTokenizerError?.(m.id, err)
      return ESTIMATE
    }
  }

  return {
    async list(tenant) {
      return (await current()).filter((m) => visible(m, tenant))
    },
    all: current,
    async get(tenant, id) {
      const m = (await kept()).find((x) => x.id === id)
      if (m) return visible(m, tenant) ? m : null
      // Not in the kept listing: it may have been published since.
      const bytes = await store.get(manifestKey(id)).catch(() => null)
      if (!bytes) return null
      const fresh = (await load().models).find((x) => x.id === id)
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
