/** A model folder on disk as a FolderSource (Node only). */
import { readdir, readFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import type { FolderSource } from './source.js'

export function dirSource(dir: string): FolderSource {
  return {
    async list() {
      const entries = await readdir(dir, { recursive: true, withFileTypes: true })
      return entries
        .filter((e) => e.isFile())
        .map((e) => relative(dir, join(e.parentPath, e.name)).split(sep).join('/'))
        .sort()
    },
    async read(path) {
      try {
        const b = await readFile(join(dir, ...path.split('/')))
        return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
        throw err
      }
    },
  }
}
