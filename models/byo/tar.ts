/**
 * Unpacks a tar archive (optionally gzip-compressed) into memory: what
 * `tar -cf model.tar -C folder .` or `tar -czf` writes (ustar, GNU long names,
 * pax `path` records). Runtime-neutral (DecompressionStream for gzip).
 * Directories and links are skipped; paths are normalised (`./` dropped) and
 * must stay inside the folder.
 *
 * Reference: POSIX pax/ustar format (IEEE Std 1003.1, "pax" interchange format).
 */
import { isSafeRelativePath } from './source.js'

export class TarError extends Error {
  override readonly name = 'TarError'
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

async function gunzip(b: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([b as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream('gzip'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

/** path → bytes of every regular file in the archive. */
export async function readTar(input: Uint8Array): Promise<Map<string, Uint8Array>> {
  const b = isGzip(input) ? await gunzip(input) : input
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
