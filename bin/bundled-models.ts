/**
 * The models that ship in this repository (`models/<id>/` folders with an
 * `onnx/model.onnx`) are published into the ObjectStore for every tenant.
 * A model is republished only when its files changed (same paths, sizes and
 * hashes: nothing to do), so boots stay fast.
 */
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import type { ModelManifest } from '../core/model-manifest.js'
import { readManifest } from '../core/model-manifest.js'
import { publishModelFolder } from '../core/model-publish.js'
import type { ObjectStore } from '../core/ports/object-store.js'

/** Folders under `modelsDir` that hold a servable model. */
export function bundledModelDirs(modelsDir: string): Array<{ id: string; dir: string }> {
  return readdirSync(modelsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(modelsDir, d.name, 'onnx', 'model.onnx')))
    .map((d) => ({ id: d.name, dir: join(modelsDir, d.name) }))
}

export async function publishBundledModels(store: ObjectStore, modelsDir: string): Promise<ModelManifest[]> {
  const published: ModelManifest[] = []
  for (const { id, dir } of bundledModelDirs(modelsDir)) {
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>
    const contextLength = Number(config.max_position_embeddings ?? config.n_positions ?? 2048)
    const current = await readManifest(store, id)
    if (current && sameFiles(current, dir)) continue
    published.push(
      await publishModelFolder(store, dir, {
        id,
        owner: null,
        contextLength,
        source: 'bundled',
        // Training leftovers never ship to workers.
        include: shipped,
      }),
    )
  }
  return published
}

const shipped = (path: string) => !path.startsWith('.') && !path.startsWith('checkpoints/')

function sameFiles(manifest: ModelManifest, dir: string): boolean {
  const onDisk = listFiles(dir).filter(shipped)
  if (onDisk.length !== manifest.files.length) return false
  return manifest.files.every((f) => {
    const full = join(dir, f.path)
    if (!existsSync(full)) return false
    return createHash('sha256').update(readFileSync(full)).digest('hex') === f.sha256
  })
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)).split(sep).join('/'))
}
