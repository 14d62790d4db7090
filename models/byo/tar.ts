/**
 * Unpacks a tar archive (optionally gzip-compressed) into memory: what
 * `tar -cf model.tar -C folder .` or `tar -czf` writes (ustar, GNU long names,
 * pax `path` records). Runtime-neutral (DecompressionStream for gzip).
 * Gzip is inflated as a stream and counted: a small archive that expands past
 * `maxBytes` (a gzip bomb) stops there with TarTooLargeError instead of
 * filling memory, and bad or truncated gzip data is a TarError.
 * Directories and links are skipped; paths are normalised (`./` dropped) and
 * must stay inside the folder.
 *
 * Reference: POSIX pax/ustar format (IEEE Std 1003.1, "pax" interchange format).
 */
import { isSafeRelativePath } from './source.js'

export class TarError extends Error {
  override readonly name: string = 'TarError'
}

/** The archive unpacks to more than the bytes allowed. */
export class TarTooLargeError extends TarError {
  override readonly name = 'TarTooLargeError'
}

const BLOCK = 512
const latin1 = new TextDecoder('latin1')
const utf8 = new TextDecoder('utf-8')

const field = (h: Uint8Array, start: number, len: number, dec = utf8) => {
  const slice = h.subarray(start, start + len)
  const nul = slice.indexOf(0)
  return dec.decode(nul < 0 ? slice : slice.subarray(0, nul))
}

function octal(h: Uint8Array, start: number, len: number): number {
  // GNU base-256 for sizes over 8 GiB.
  if (h[start] & 0x80) {
    let n = h[start] & 0x7f
    for (let i = 1; i < len; i++) n = n * 256 + h[start + i]
    return n
  }
  const s = field(h, start, len, latin1).trim()
  const n = s ? Number.parseInt(s, 8) : 0
  if (!Number.isFinite(n)) throw new TarError(`bad number field '${s}'`)
  return n
}

const isGzip = (b: Uint8Array) => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b

async function gunzip(b: Uint8Array, maxBytes: number): Promise<Uint8Array> {
  // DecompressionStream honours backpressure: reading chunk by chunk inflates only what was read,
  // so stopping at maxBytes bounds memory (a 2 MB bomb of 2 GiB stops after maxBytes).
  const reader = new Blob([b as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream('gzip'))
    .getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      total += value.length
      if (total > maxBytes) {
        await reader.cancel().catch(() => {})
        throw new TarTooLargeError(`the archive unpacks to more than ${maxBytes} bytes`)
      }
      chunks.push(value)
    }
  } catch (err) {
    if (err instanceof TarError) throw err
    throw new TarError(`the gzip data is not valid (${err instanceof Error ? err.message : String(err)})`)
  }
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

export interface ReadTarOptions {
  /** Most bytes a gzip-compressed archive may unpack to (default: unbounded). */
  maxBytes?: number
}

/** path → bytes of every regular file in the archive. */
export async function readTar(input: Uint8Array, o: ReadTarOptions = {}): Promise<Map<string, Uint8Array>> {
  const b = isGzip(input) ? await gunzip(input, o.maxBytes ?? Number.POSITIVE_INFINITY) : input
  const files = new Map<string, Uint8Array>()
  let p = 0
  let longName: string | null = null
  let paxPath: string | null = null
  while (p + BLOCK <= b.length) {
    const h = b.subarray(p, p + BLOCK)
    if (h.every((x) => x === 0)) break // end of archive
    let sum = 0
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]
    if (sum !== octal(h, 148, 8)) throw new TarError(`bad header checksum at byte ${p} (not a tar archive?)`)
    const size = octal(h, 124, 12)
    const type = String.fromCharCode(h[156] || 48)
    const dataStart = p + BLOCK
    if (dataStart + size > b.length) throw new TarError('the archive is truncated')
    const data = b.subarray(dataStart, dataStart + size)
    p = dataStart + Math.ceil(size / BLOCK) * BLOCK
    if (type === 'L') {
      longName = field(data, 0, data.length)
      continue
    }
    if (type === 'x') {
      paxPath = paxRecord(data, 'path') ?? paxPath
      continue
    }
    if (type === 'g') continue
    const prefix = field(h, 345, 155)
    const name = paxPath ?? longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100))
    longName = null
    paxPath = null
    if (type !== '0' && type !== '7') continue // directories, links, devices
    const path = name.replace(/^(\.\/)+/, '')
    if (!isSafeRelativePath(path))
      throw new TarError(`the archive holds a path outside the folder: '${name}'`)
    files.set(path, data)
  }
  return files
}

function paxRecord(data: Uint8Array, key: string): string | null {
  // Records are "<length> <key>=<value>\n"; the length counts bytes.
  let i = 0
  let found: string | null = null
  while (i < data.length) {
    const space = data.indexOf(0x20, i)
    if (space < 0) break
    const len = Number(latin1.decode(data.subarray(i, space)))
    if (!(len > 0) || i + len > data.length) break
    const record = utf8.decode(data.subarray(space + 1, i + len - 1))
    const eq = record.indexOf('=')
    if (eq > 0 && record.slice(0, eq) === key) found = record.slice(eq + 1)
    i += len
  }
  return found
}

/** Strips one leading folder shared by every path (`tar -cf m.tar my-model/`). */
export function stripCommonFolder(files: Map<string, Uint8Array>): Map<string, Uint8Array> {
  const paths = [...files.keys()]
  if (!paths.length || paths.some((p) => !p.includes('/'))) return files
  const first = paths[0].split('/')[0]
  if (paths.some((p) => p.split('/')[0] !== first)) return files
  return new Map([...files].map(([k, v]) => [k.slice(first.length + 1), v]))
}
