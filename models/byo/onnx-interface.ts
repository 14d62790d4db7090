/**
 * An ONNX model's interface read straight from its protobuf bytes, without
 * onnxruntime and without decoding the weights: graph inputs and outputs
 * (name, element type, shape) and the external data files its tensors point
 * to. A small wire-format walker (varints and length-delimited fields) skips
 * everything else, so a multi-gigabyte graph costs one pass and no copies.
 *
 * Field numbers: onnx/onnx `onnx/onnx.proto` (ModelProto.graph = 7,
 * GraphProto.initializer = 5 / input = 11 / output = 12, TensorProto.name = 8 /
 * external_data = 13 / data_location = 14, ...).
 */

export interface OnnxIo {
  name: string
  /** 'float32', 'float16', 'int64', ... or `type<N>` for an unknown code. */
  type: string
  /** Fixed sizes as numbers, symbolic ones as their names ('' when unnamed). */
  shape: Array<number | string>
}

export interface OnnxInterface {
  inputs: OnnxIo[]
  outputs: OnnxIo[]
  /** Relative paths (as written in the graph) of external data files, deduplicated. */
  externalData: string[]
  producer: string
}

export class OnnxReadError extends Error {
  override readonly name = 'OnnxReadError'
}

/** ONNX TensorProto.DataType codes. */
const ELEM: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  16: 'bfloat16',
}

type Field = { no: number; wire: number; varint: bigint; start: number; end: number }

/** Iterates the fields of one message in bytes[start, end). */
function* fields(b: Uint8Array, start: number, end: number): Generator<Field> {
  let p = start
  const varint = (): bigint => {
    let x = 0n
    let shift = 0n
    for (;;) {
      if (p >= end) throw new OnnxReadError('truncated varint')
      const byte = b[p++]
      x |= BigInt(byte & 0x7f) << shift
      if (!(byte & 0x80)) return x
      shift += 7n
      if (shift > 70n) throw new OnnxReadError('varint too long')
    }
  }
  while (p < end) {
    const key = varint()
    const no = Number(key >> 3n)
    const wire = Number(key & 7n)
    if (no === 0) throw new OnnxReadError('field number 0')
    if (wire === 0) yield { no, wire, varint: varint(), start: p, end: p }
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4
      if (p + n > end) throw new OnnxReadError('truncated fixed field')
      yield { no, wire, varint: 0n, start: p, end: p + n }
      p += n
    } else if (wire === 2) {
      const len = Number(varint())
      if (p + len > end) throw new OnnxReadError('truncated length-delimited field')
      const s = p
      p += len
      yield { no, wire, varint: 0n, start: s, end: s + len }
    } else throw new OnnxReadError(`unsupported wire type ${wire}`)
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: false })
const text = (b: Uint8Array, f: Field) => utf8.decode(b.subarray(f.start, f.end))

function valueInfo(b: Uint8Array, start: number, end: number): OnnxIo {
  const io: OnnxIo = { name: '', type: 'unknown', shape: [] }
  for (const f of fields(b, start, end)) {
    if (f.no === 1 && f.wire === 2) io.name = text(b, f)
    else if (f.no === 2 && f.wire === 2) {
      // TypeProto: tensor_type = 1
      for (const t of fields(b, f.start, f.end)) {
        if (t.no !== 1 || t.wire !== 2) {
          if (t.wire === 2 && io.type === 'unknown') io.type = 'non-tensor'
          continue
        }
        for (const tt of fields(b, t.start, t.end)) {
          if (tt.no === 1 && tt.wire === 0) io.type = ELEM[Number(tt.varint)] ?? `type${tt.varint}`
          else if (tt.no === 2 && tt.wire === 2) {
            for (const d of fields(b, tt.start, tt.end)) {
              if (d.no !== 1 || d.wire !== 2) continue
              let dim: number | string = ''
              for (const x of fields(b, d.start, d.end)) {
                if (x.no === 1 && x.wire === 0) dim = Number(BigInt.asIntN(64, x.varint))
                else if (x.no === 2 && x.wire === 2) dim = text(b, x)
              }
              io.shape.push(dim)
            }
          }
        }
      }
    }
  }
  return io
}

/** TensorProto: its name and, when stored outside, the external file's location. */
function tensorInfo(b: Uint8Array, start: number, end: number): { name: string; location: string | null } {
  let name = ''
  let external = false
  let location: string | null = null
  for (const f of fields(b, start, end)) {
    if (f.no === 8 && f.wire === 2) name = text(b, f)
    else if (f.no === 14 && f.wire === 0) external = f.varint === 1n
    else if (f.no === 13 && f.wire === 2) {
      let key = ''
      let value = ''
      for (const kv of fields(b, f.start, f.end)) {
        if (kv.no === 1 && kv.wire === 2) key = text(b, kv)
        else if (kv.no === 2 && kv.wire === 2) value = text(b, kv)
      }
      if (key === 'location') location = value
    }
  }
  return { name, location: external ? location : null }
}

/** Reads the interface of the model in `bytes` (a serialized ModelProto). */
export function readOnnxInterface(bytes: Uint8Array): OnnxInterface {
  let graph: Field | undefined
  let producer = ''
  try {
    for (const f of fields(bytes, 0, bytes.length)) {
      if (f.no === 7 && f.wire === 2) graph = f
      else if (f.no === 2 && f.wire === 2) producer = text(bytes, f)
    }
  } catch (err) {
    throw new OnnxReadError(`not an ONNX model (${err instanceof Error ? err.message : err})`)
  }
  if (!graph) throw new OnnxReadError('not an ONNX model (no graph)')
  const inputs: OnnxIo[] = []
  const outputs: OnnxIo[] = []
  const initializers = new Set<string>()
  const external = new Set<string>()
  const noteTensor = (start: number, end: number) => {
    const t = tensorInfo(bytes, start, end)
    if (t.location !== null) external.add(t.location)
    return t.name
  }
  try {
    for (const f of fields(bytes, graph.start, graph.end)) {
      if (f.wire !== 2) continue
      if (f.no === 11) inputs.push(valueInfo(bytes, f.start, f.end))
      else if (f.no === 12) outputs.push(valueInfo(bytes, f.start, f.end))
      else if (f.no === 5) initializers.add(noteTensor(f.start, f.end))
      else if (f.no === 1) {
        // NodeProto.attribute = 5; AttributeProto.t = 5, .tensors = 11 (Constant nodes may be external too).
        for (const a of fields(bytes, f.start, f.end)) {
          if (a.no !== 5 || a.wire !== 2) continue
          for (const at of fields(bytes, a.start, a.end))
            if ((at.no === 5 || at.no === 11) && at.wire === 2) noteTensor(at.start, at.end)
        }
      }
    }
  } catch (err) {
    throw new OnnxReadError(`the graph is damaged (${err instanceof Error ? err.message : err})`)
  }
  // Before IR version 4, initializers were listed among the graph inputs too: they are not inputs to feed.
  return {
    inputs: inputs.filter((i) => !initializers.has(i.name)),
    outputs,
    externalData: [...external],
    producer,
  }
}
