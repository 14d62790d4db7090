/**
 * Model folders from the ObjectStore, cached on local disk and kept open in
 * memory. `models/<id>/manifest.json` lists every file with its SHA-256; the
 * files are downloaded to `<dir>/<id>/<version>/` (version: a hash of the
 * manifest's file list, so a republished model gets a fresh folder), each one
 * verified while it streams, then the folder is renamed into place, so a crash
 * never leaves a half-written model behind.
 *
 * Opened models (e.g. onnxruntime sessions) live in an LRU under a memory
 * budget: concurrent `acquire`s of the same id share one load, and a model is
 * only evicted while no lease holds it. A model larger than the whole budget
 * still loads (alone), with a warning.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open as openFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Logger } from '../../core/logger.js'
import type { Metrics } from '../../core/metrics.js'
import { MODEL_ID_PATTERN, type ModelManifest, modelPrefix, readManifest } from '../../core/model-manifest.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import { modelLoadFailed, modelNotFound } from './errors.js'

export interface ModelCacheOptions<T> {
  store: ObjectStore
  /** Local folder for downloaded models. */
  dir: string
  /** Memory budget for open models, in bytes. */
  budgetBytes: number
  /** Opens a verified local folder. */
  open(folder: string, manifest: ModelManifest): Promise<T>
  /** Memory an open model takes, in bytes (e.g. the size of its weights). */
  sizeOf(model: T): number
  dispose(model: T): Promise<void> | void
  logger?: Logger
  metrics?: Metrics
}

export interface Lease<T> {
  readonly id: string
  readonly model: T
  /** Gives the model back; it becomes evictable when no lease holds it. */
  release(): void
}

interface Entry<T> {
  id: string
  loading: Promise<T>
  model?: T
  size: number
  refs: number
  lastUsed: number
}

const VERIFIED_MARKER = '.verified'

export class ModelCache<T> {
  private readonly entries = new Map<string, Entry<T>>()
  private clock = 0

  constructor(private readonly o: ModelCacheOptions<T>) {
    if (!(o.budgetBytes > 0)) throw new Error('ModelCache: budgetBytes must be > 0')
    if (!o.dir) throw new Error('ModelCache: dir is required')
  }

  /** Loads (or reuses) a model and holds it until `release()`. */
  async acquire(id: string): Promise<Lease<T>> {
    if (!MODEL_ID_PATTERN.test(id)) throw modelNotFound(id)
    let entry = this.entries.get(id)
    if (entry) {
      this.o.metrics?.modelCache.inc({ result: 'hit' })
    } else {
      this.o.metrics?.modelCache.inc({ result: 'miss' })
      entry = { id, loading: this.load(id), size: 0, refs: 0, lastUsed: 0 }
      this.entries.set(id, entry)
      const e = entry
      e.loading.then(
        (model) => {
          e.model = model
          e.size = this.o.sizeOf(model)
          this.evict()
        },
        () => {
          if (this.entries.get(id) === e) this.entries.delete(id)
        },
      )
    }
    entry.refs++
    entry.lastUsed = ++this.clock
    let model: T
    try {
      model = await entry.loading
    } catch (err) {
      entry.refs--
      throw err
    }
    let released = false
    const e = entry
    return {
      id,
      model,
      release: () => {
        if (released) return
        released = true
        e.refs--
        e.lastUsed = ++this.clock
        this.evict()
      },
    }
  }

  /** Ids of the models open now, least recently used first. */
  loaded(): string[] {
    return [...this.entries.values()]
      .filter((e) => e.model !== undefined)
      .sort((a, b) => a.lastUsed - b.lastUsed)
      .map((e) => e.id)
  }

  /** Bytes taken by open models. */
  usedBytes(): number {
    let total = 0
    for (const e of this.entries.values()) total += e.size
    return total
  }

  /** Closes every model not in use (all of them once leases are released). */
  async close(): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    for (const e of all) {
      const model = await e.loading.catch(() => undefined)
      if (model !== undefined) await this.o.dispose(model)
    }
  }

  private evict(): void {
    for (;;) {
      const used = this.usedBytes()
      if (used <= this.o.budgetBytes) return
      const open = [...this.entries.values()].filter((e) => e.model !== undefined)
      const idle = open.filter((e) => e.refs === 0).sort((a, b) => a.lastUsed - b.lastUsed)
      // The last open model is never evicted: a model larger than the budget still runs, alone.
      if (!idle.length || open.length <= 1) {
        this.o.logger?.warn(
          { usedBytes: used, budgetBytes: this.o.budgetBytes },
          'models in use exceed the cache budget',
        )
        return
      }
      const victim = idle[0]
      this.entries.delete(victim.id)
      this.o.logger?.info({ model: victim.id, bytes: victim.size }, 'model evicted from the cache')
      void Promise.resolve()
        .then(() => this.o.dispose(victim.model!))
        .catch((err) => this.o.logger?.warn({ err, model: victim.id }, 'closing an evicted model failed'))
    }
  }

  private async load(id: string): Promise<T> {
    const started = performance.now()
    const manifest = await readManifest(this.o.store, id).catch((err) => {
      throw modelLoadFailed(id, 'its manifest is not valid', err)
    })
    if (!manifest) throw modelNotFound(id)
    const folder = await this.download(id, manifest)
    let model: T
    try {
      model = await this.o.open(folder, manifest)
    } catch (err) {
      if (err instanceof Error && 'status' in err) throw err
      // The reason reaches the tenant: the runtime's messages name files in this host's cache folder,
      // which is no business of theirs (the cause, with the path, is logged).
      const reason = (err instanceof Error ? err.message : String(err)).replaceAll(folder, `<${id}>`)
      throw modelLoadFailed(id, reason, err)
    }
    const seconds = (performance.now() - started) / 1000
    this.o.metrics?.modelLoadSeconds.observe({ model: id }, seconds)
    this.o.logger?.info({ model: id, seconds: Number(seconds.toFixed(3)), folder }, 'model loaded')
    return model
  }

  /** Local folder holding the verified files of `manifest`; downloads what is missing. */
  private async download(id: string, manifest: ModelManifest): Promise<string> {
    const version = createHash('sha256').update(JSON.stringify(manifest.files)).digest('hex').slice(0, 16)
    const folder = join(this.o.dir, id, version)
    if (await exists(join(folder, VERIFIED_MARKER))) return folder
    for (const f of manifest.files) {
      if (f.path.startsWith('/') || f.path.split('/').some((p) => p === '..' || p === '' || p === '.'))
        throw modelLoadFailed(id, `the manifest lists an unsafe path '${f.path}'`)
    }
    const tmp = `${folder}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
    try {
      for (const f of manifest.files) {
        const target = join(tmp, f.path)
        await mkdir(dirname(target), { recursive: true })
        const { sha256, size } = await this.fetchFile(modelPrefix(id) + f.path, target)
        if (sha256 === null) throw modelLoadFailed(id, `the file '${f.path}' is missing from the store`)
        if (sha256 !== f.sha256 || size !== f.size)
          throw modelLoadFailed(id, `checksum mismatch for '${f.path}' (expected ${f.sha256}, got ${sha256})`)
      }
      await writeFile(join(tmp, VERIFIED_MARKER), `${new Date().toISOString()}\n`)
      try {
        await rename(tmp, folder)
      } catch (err) {
        // Another process finished the same version first: keep theirs.
        if (!(await exists(join(folder, VERIFIED_MARKER)))) throw err
      }
      return folder
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
  }

  /** Streams one object to a file, hashing as it goes; sha256 null when the object is missing. */
  private async fetchFile(key: string, target: string): Promise<{ sha256: string | null; size: number }> {
    const stream = await this.o.store.getStream(key)
    if (!stream) return { sha256: null, size: 0 }
    const hash = createHash('sha256')
    const file = await openFile(target, 'w')
    let size = 0
    try {
      const reader = stream.getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        hash.update(value)
        size += value.byteLength
        await file.write(value)
      }
    } finally {
      await file.close()
    }
    return { sha256: hash.digest('hex'), size }
  }
}

/** Whether a file or folder exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}
