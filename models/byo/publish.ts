/**
 * Publish a validated model folder into the ObjectStore, the way
 * core/model-publish.ts lays models out: files under `models/<id>/`, then
 * `models/<id>/manifest.json` last, so a half-uploaded model is never served.
 * Runtime-neutral (Web Crypto for SHA-256): the CLI runs it on Node, the admin
 * route wherever the edge runs.
 */
import {
  MODEL_ID_PATTERN,
  type ModelManifest,
  manifestKey,
  markModelsChanged,
  modelPrefix,
  readManifest,
} from '../../core/model-manifest.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import type { FolderSource } from './source.js'
import { type ValidatedModel, type ValidateOptions, validateModelFolder } from './validate.js'

export interface PublishByoOptions extends ValidateOptions {
  /** Model id (the `model` of API requests). */
  id: string
  /** Tenant that may use it; null: every tenant. */
  owner: string | null
  /** Replace a model of the same id and owner; default false. */
  replace?: boolean
}

export interface PublishResult {
  manifest: ModelManifest
  validated: ValidatedModel
}

export class PublishConflictError extends Error {
  override readonly name = 'PublishConflictError'
}

export class InvalidModelIdError extends Error {
  override readonly name = 'InvalidModelIdError'
}

const hex = (buf: ArrayBuffer) =>
  [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('')

/** Checks that `id` may be published by `owner` (throws PublishConflictError otherwise). */
export async function checkPublishable(
  store: ObjectStore,
  o: Pick<PublishByoOptions, 'id' | 'owner' | 'replace'>,
): Promise<void> {
  if (!MODEL_ID_PATTERN.test(o.id))
    throw new InvalidModelIdError(
      `'${o.id}' is not a valid model id (letters, digits, '.', '_', ':', '-'; at most 128; starting with a letter or digit)`,
    )
  const current = await readManifest(store, o.id)
  if (!current) return
  if (current.source !== 'published' || current.owner !== o.owner)
    throw new PublishConflictError(
      `a model '${o.id}' already exists and belongs to someone else; choose another name`,
    )
  if (!o.replace)
    throw new PublishConflictError(`a model '${o.id}' already exists; pass replace to overwrite it`)
}

/** Validates `src`, uploads what it serves from, and writes the manifest last. Nothing is stored when validation fails. */
export async function publishByoModel(
  store: ObjectStore,
  src: FolderSource,
  o: PublishByoOptions,
): Promise<PublishResult> {
  await checkPublishable(store, o)
  const validated = await validateModelFolder(src, o)
  const files: ModelManifest['files'] = []
  for (const f of validated.files) {
    if (src.digest && src.stream) {
      // Large files: hashed in one streaming pass, uploaded in another.
      const { size, sha256 } = await src.digest(f.from)
      await store.put(modelPrefix(o.id) + f.to, src.stream(f.from))
      files.push({ path: f.to, size, sha256 })
      continue
    }
    const bytes = await src.read(f.from)
    if (!bytes) throw new Error(`'${f.from}' disappeared while publishing`)
    const sha256 = hex(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>))
    await store.put(modelPrefix(o.id) + f.to, bytes)
    files.push({ path: f.to, size: bytes.byteLength, sha256 })
  }
  const manifest: ModelManifest = {
    id: o.id,
    owner: o.owner,
    created: Math.floor(Date.now() / 1000),
    context_length: validated.info.contextLength,
    files,
    source: 'published',
  }
  await store.put(manifestKey(o.id), JSON.stringify(manifest, null, 2), { contentType: 'application/json' })
  // Running edges list the model on their next request, whichever process published it.
  await markModelsChanged(store)
  return { manifest, validated }
}
