/**
 * A model folder on disk as a FolderSource (Node only). Files are hashed and
 * uploaded as streams, so a multi-gigabyte `model.onnx_data` never sits in
 * memory whole.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { Readable } from 'node:stream'
import type { FolderSource } from './source.js'

export function dirSource(dir: string): FolderSource {
  const full = (path: string) => join(dir, ...path.split('/'))
  return {
    async digest(path) {
      const hash = createHash('sha256')
      let size = 0
      for await (const chunk of createReadStream(full(path))) {
        hash.update(chunk as Buffer)
        size += (chunk as Buffer).byteLength
      }
      return { size, sha256: hash.digest('hex') }
    },
    stream: (path) => Readable.toWeb(createReadStream(full(path))) as ReadableStream<Uint8Array>,
    async list() {
      const entries = await readdir(dir, { recursive: true, withFileTypes: true })
      return entries
        .filter((e) => e.isFile())
        .map((e) => relative(dir, join(e.parentPath, e.name)).split(sep).join('/'))
        .sort()
    },
    async read(path) {
      try {
        const b = await readFile(full(path))
        return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
        throw err
      }
    },
  }
}
