/**
 * Upload a model folder on disk into the ObjectStore (Node only). Files first,
 * manifest last: readers never see a model whose files are not all there.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { type ModelManifest, manifestKey, markModelsChanged, modelPrefix } from './model-manifest.js'
import type { ObjectStore } from './ports/object-store.js'

export interface PublishOptions {
  id: string
  owner: string | null
  contextLength: number
  source?: ModelManifest['source']
  baseModel?: string
  /** Only files whose relative path passes are uploaded. Default: all but hidden files. */
  include?: (path: string) => boolean
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await walk(full)))
    else if (entry.isFile()) out.push(full)
  }
  return out
}

export async function publishModelFolder(
  store: ObjectStore,
  dir: string,
  o: PublishOptions,
): Promise<ModelManifest> {
  const include = o.include ?? ((p: string) => !p.split('/').some((part) => part.startsWith('.')))
  const files: ModelManifest['files'] = []
  for (const full of (await walk(dir)).sort()) {
    const path = relative(dir, full).split(sep).join('/')
    if (!include(path)) continue
    const bytes = await readFile(full)
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    await store.put(
      modelPrefix(o.id) + path,
      new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    )
    files.push({ path, size: (await stat(full)).size, sha256 })
  }
  const manifest: ModelManifest = {
    id: o.id,
    owner: o.owner,
    created: Math.floor(Date.now() / 1000),
    context_length: o.contextLength,
    files,
    source: o.source ?? 'published',
    ...(o.baseModel ? { base_model: o.baseModel } : {}),
  }
  await store.put(manifestKey(o.id), JSON.stringify(manifest, null, 2), { contentType: 'application/json' })
  await markModelsChanged(store)
  return manifest
}
