/**
 * safetensors reader/writer (https://github.com/huggingface/safetensors#format):
 * 8-byte little-endian header length, a JSON header `{name: {dtype, shape,
 * data_offsets: [begin, end]}, __metadata__?: {str: str}}`, then the raw
 * little-endian bytes. Hand-written because no maintained JS library reads and
 * writes the format; it is small and covered by tests (round trips, offsets,
 * fp16/bf16, and files written by other tools' conventions).
 *
 * Model weights are float32 in memory (`FloatTensor`); F16 and BF16 tensors are
 * widened when read, and the writer can narrow them.
 */
import { fromBf16, fromHalf, toBf16, toHalf } from './half.js'

/** A dense row-major float32 tensor. */
export interface FloatTensor {
  shape: number[]
  data: Float32Array
}

export type Weights = Map<string, FloatTensor>

export type SafeDType = 'F32' | 'F16' | 'BF16'

export interface SafetensorsFile {
  tensors: Weights
  metadata: Record<string, string>
}

const BYTES: Record<SafeDType, number> = { F32: 4, F16: 2, BF16: 2 }

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1)

export function readSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (bytes.byteLength < 8) throw new Error('safetensors: file too short')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const headerLen = Number(view.getBigUint64(0, true))
  if (8 + headerLen > bytes.byteLength) throw new Error('safetensors: header length past end of file')
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen))) as Record<
    string,
    unknown
  >
  const body = bytes.subarray(8 + headerLen)
  const tensors: Weights = new Map()
  let metadata: Record<string, string> = {}
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>
      continue
    }
    const { dtype, shape, data_offsets } = entry as {
      dtype: string
      shape: number[]
      data_offsets: [number, number]
    }
    if (!(dtype in BYTES))
      throw new Error(`safetensors: tensor '${name}' has dtype ${dtype}; only F32, F16, BF16 are read`)
    const [begin, end] = data_offsets
    const n = numel(shape)
    if (end - begin !== n * BYTES[dtype as SafeDType] || end > body.byteLength)
      throw new Error(`safetensors: tensor '${name}' offsets [${begin}, ${end}] do not match its shape`)
    // Copy into an aligned buffer: offsets in the file need not be 4-byte aligned.
    // (A fresh Uint8Array, not body.slice: on a Node Buffer slice is a view into a shared pool.)
    const raw = new Uint8Array(end - begin)
    raw.set(body.subarray(begin, end))
    const data =
      dtype === 'F32'
        ? new Float32Array(raw.buffer)
        : dtype === 'F16'
          ? fromHalf(new Uint16Array(raw.buffer))
          : fromBf16(new Uint16Array(raw.buffer))
    tensors.set(name, { shape: [...shape], data })
  }
  return { tensors, metadata }
}

export interface WriteSafetensorsOptions {
  /** Storage dtype for every tensor; default F32. */
  dtype?: SafeDType
  metadata?: Record<string, string>
}

/** Serializes tensors in name order (as the Python library does), 8-byte aligned header. */
export function writeSafetensors(tensors: Weights, options: WriteSafetensorsOptions = {}): Uint8Array {
  const dtype = options.dtype ?? 'F32'
  const names = [...tensors.keys()].sort()
  const header: Record<string, unknown> = {}
  if (options.metadata) header.__metadata__ = options.metadata
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const name of names) {
    const t = tensors.get(name)!
    if (t.data.length !== numel(t.shape))
      throw new Error(`safetensors: tensor '${name}' data does not match shape`)
    const raw =
      dtype === 'F32'
        ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
        : new Uint8Array((dtype === 'F16' ? toHalf(t.data) : toBf16(t.data)).buffer)
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + raw.byteLength] }
    chunks.push(raw)
    offset += raw.byteLength
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8) // pad so the data starts 8-byte aligned
  const head = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + head.byteLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true)
  out.set(head, 8)
  let pos = 8 + head.byteLength
  for (const c of chunks) {
    out.set(c, pos)
    pos += c.byteLength
  }
  return out
}
