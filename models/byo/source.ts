/**
 * Where a model folder's files come from while it is validated and published:
 * a folder on disk (fs-source.ts, the CLI) or files held in memory (an upload
 * to the admin route). Paths are relative, with `/` separators.
 */

export interface FolderSource {
  /** Every file's relative path. */
  list(): Promise<string[]>
  /** A file's bytes, or null when it does not exist. */
  read(path: string): Promise<Uint8Array | null>
  /**
   * Optional, for files too large to hold in memory: size and SHA-256 read as
   * a stream, and the bytes as a stream. Publishing uses them when present.
   */
  digest?(path: string): Promise<{ size: number; sha256: string }>
  stream?(path: string): ReadableStream<Uint8Array>
}

/** A folder held in memory, e.g. unpacked from a tar upload. */
export function memorySource(files: ReadonlyMap<string, Uint8Array>): FolderSource {
  return {
    list: async () => [...files.keys()].sort(),
    read: async (path) => files.get(path) ?? null,
  }
}

/** A relative path that stays inside its folder: no absolute path, no `..`, no empty or `.` parts. */
export function isSafeRelativePath(path: string): boolean {
  if (!path || path.startsWith('/') || path.includes('\\') || /^[A-Za-z]:/.test(path)) return false
  return path.split('/').every((p) => p !== '' && p !== '.' && p !== '..')
}
