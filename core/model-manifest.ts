/**
 * How a model lives in the ObjectStore: its folder's files under
 * `models/<id>/<path>` and, written last, `models/<id>/manifest.json`. A model
 * exists once its manifest exists, so a half-uploaded folder is never served.
 * The manifest lists every file with its size and SHA-256 so workers verify
 * what they download.
 */
import { z } from 'zod'
import type { ObjectStore } from './ports/object-store.js'

export const MODEL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/

export const modelManifestSchema = z.object({
  id: z.string().regex(MODEL_ID_PATTERN),
  /** Tenant that may use the model; null: every tenant. */
  owner: z.string().nullable(),
  /** Epoch seconds. */
  created: z.number().int(),
  context_length: z.number().int().positive(),
  files: z.array(
    z.object({ path: z.string().min(1), size: z.number().int().min(0), sha256: z.string().length(64) }),
  ),
  /** Where the model came from: bundled with the product, published by a user, or a fine-tune. */
  source: z.enum(['bundled', 'published', 'fine-tune']).default('published'),
  /** For fine-tunes: the base model id. */
  base_model: z.string().optional(),
})
export type ModelManifest = z.infer<typeof modelManifestSchema>

/** Where a fine-tune published as an adapter keeps it (PEFT layout). */
export const ADAPTER_WEIGHTS_PATH = 'adapter/adapter_model.safetensors'

/**
 * A fine-tune published as a LoRA adapter beside its base (no graph of its
 * own): served from the base's weights with the adapter in a slot. Fine-tunes
 * published as merged folders have a graph and are served as models.
 */
export const isAdapterManifest = (m: ModelManifest): boolean =>
  m.source === 'fine-tune' &&
  m.base_model !== undefined &&
  m.files.some((f) => f.path === ADAPTER_WEIGHTS_PATH) &&
  !m.files.some((f) => f.path.endsWith('.onnx'))

export const modelPrefix = (id: string) => `models/${id}/`
export const manifestKey = (id: string) => `models/${id}/manifest.json`

/**
 * The models' generation marker: rewritten (new bytes, so a new etag) after
 * every manifest write or delete, by whichever process makes it (the CLI, an
 * edge, a worker publishing a fine-tune). A catalog compares one cheap HEAD of
 * it with the one its cached listing was read under, instead of trusting a
 * listing for a fixed time (core/records/model-catalog.ts). Not a model: no
 * model id starts with '.'.
 */
export const MODELS_GENERATION_KEY = 'models/.generation'

/** Tells every catalog reading `store` that the set of models changed. */
export async function markModelsChanged(store: ObjectStore): Promise<void> {
  await store.put(MODELS_GENERATION_KEY, `${Date.now()} ${crypto.randomUUID()}`, {
    contentType: 'text/plain',
  })
}

/** The marker's current version; null when no model was published since markers exist. */
export async function modelsGeneration(store: ObjectStore): Promise<string | null> {
  return (await store.head(MODELS_GENERATION_KEY))?.etag ?? null
}

export async function readManifest(store: ObjectStore, id: string): Promise<ModelManifest | null> {
  if (!MODEL_ID_PATTERN.test(id)) return null
  const bytes = await store.get(manifestKey(id))
  if (!bytes) return null
  return modelManifestSchema.parse(JSON.parse(new TextDecoder().decode(bytes)))
}

export async function listManifests(store: ObjectStore): Promise<ModelManifest[]> {
  const out: ModelManifest[] = []
  let cursor: string | undefined
  do {
    const page = await store.list('models/', { cursor })
    for (const o of page.objects) {
      if (!o.key.endsWith('/manifest.json')) continue
      const bytes = await store.get(o.key)
      if (!bytes) continue
      const parsed = modelManifestSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)))
      if (parsed.success && o.key === manifestKey(parsed.data.id)) out.push(parsed.data)
    }
    cursor = page.cursor
  } while (cursor)
  return out
}

/** Deletes a model: its manifest first (it stops existing at once), then its files. False when absent. */
export async function deleteModel(store: ObjectStore, id: string): Promise<boolean> {
  if (!MODEL_ID_PATTERN.test(id) || !(await store.head(manifestKey(id)))) return false
  await store.delete(manifestKey(id))
  await markModelsChanged(store)
  const keys: string[] = []
  let cursor: string | undefined
  do {
    const page = await store.list(modelPrefix(id), { cursor })
    keys.push(...page.objects.map((o) => o.key))
    cursor = page.cursor
  } while (cursor)
  for (const key of keys) await store.delete(key)
  return true
}
