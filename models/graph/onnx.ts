/**
 * Serializes a `Graph` to an ONNX ModelProto (bytes) with the protobufjs
 * schema from `onnx-proto`. Initializers go in `raw_data` (little-endian).
 */

import type { onnx as OnnxTypes } from 'onnx-proto'
import onnxProto from 'onnx-proto'
import { type Attr, type Dim, type Graph, OPSET, onnxType, type TensorData, type Value } from './ir.js'

const { onnx } = onnxProto

export interface SerializeOptions {
  /** Key/value pairs stored in the model's metadata_props. */
  metadata?: Record<string, string>
  docString?: string
  /**
   * Default-domain opset; `OPSET` unless a graph uses newer ops (the engine's
   * serving graph uses opset 23's Attention and RotaryEmbedding).
   */
  opset?: number
}

/** ONNX IR version per opset (onnx/onnx docs/Versioning.md): 8 for opset 17, 10 for 21-22, 11 for 23. */
const irVersion = (opset: number) => (opset >= 23 ? 11 : opset >= 21 ? 10 : opset >= 19 ? 9 : 8)

export function toOnnxModel(g: Graph, options: SerializeOptions = {}): OnnxTypes.ModelProto {
  const graph = onnx.GraphProto.create({
    name: g.name,
    input: g.inputs.map(valueInfo),
    output: g.outputs.map(valueInfo),
    initializer: [...g.initializers.values()].map((init) =>
      onnx.TensorProto.create({
        name: init.value.name,
        dims: [...init.dims],
        dataType: onnxType(init.value.dtype),
        rawData: rawBytes(init.data),
      }),
    ),
    node: g.nodes.map((n) =>
      onnx.NodeProto.create({
        name: n.name,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs.map((v) => v?.name ?? ''),
        output: n.outputs.map((v) => v.name),
        attribute: Object.entries(n.attrs).map(([name, a]) => attribute(name, a)),
      }),
    ),
  })
  return onnx.ModelProto.create({
    irVersion: irVersion(options.opset ?? OPSET),
    producerName: 'prometheus-gpt',
    producerVersion: '0.1.0',
    docString: options.docString ?? '',
    opsetImport: [
      { domain: '', version: options.opset ?? OPSET },
      // onnxruntime's contrib ops are all version 1 of their domain.
      ...[...new Set(g.nodes.map((n) => n.domain ?? '').filter(Boolean))].map((domain) => ({
        domain,
        version: 1,
      })),
    ],
    metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph,
  })
}

export function serializeGraph(g: Graph, options: SerializeOptions = {}): Uint8Array {
  return onnx.ModelProto.encode(toOnnxModel(g, options)).finish()
}

function valueInfo(v: Value): OnnxTypes.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: onnxType(v.dtype),
        shape: v.shape ? { dim: v.shape.map(dim) } : undefined,
      },
    },
  }
}

const dim = (d: Dim): OnnxTypes.TensorShapeProto.IDimension =>
  typeof d === 'number' ? { dimValue: d } : { dimParam: d }

function rawBytes(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
}

function attribute(name: string, a: Attr): OnnxTypes.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType
  if ('int' in a) return { name, type: T.INT, i: a.int }
  if ('float' in a) return { name, type: T.FLOAT, f: a.float }
  if ('ints' in a) return { name, type: T.INTS, ints: a.ints }
  if ('floats' in a) return { name, type: T.FLOATS, floats: a.floats }
  return { name, type: T.STRING, s: new TextEncoder().encode(a.string) }
}

export interface OnnxValueInfo {
  name: string
  /** ONNX element type name, e.g. 'float32', 'int64'. */
  dtype: string
  shape: Dim[]
}

export interface OnnxSummary {
  opset: number
  producer: string
  inputs: OnnxValueInfo[]
  outputs: OnnxValueInfo[]
  nodes: number
  initializers: number
  /** Node count per op type. */
  ops: Record<string, number>
}

const ELEM_NAMES: Record<number, string> = {
  1: 'float32',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  16: 'bfloat16',
}

/** Reads an ONNX model's interface without running it. */
export function describeOnnx(bytes: Uint8Array): OnnxSummary {
  const m = onnx.ModelProto.decode(bytes)
  const info = (v: OnnxTypes.IValueInfoProto): OnnxValueInfo => {
    const t = v.type?.tensorType
    return {
      name: v.name ?? '',
      dtype: ELEM_NAMES[t?.elemType ?? 0] ?? `type${t?.elemType}`,
      shape: (t?.shape?.dim ?? []).map((d) => d.dimParam || Number(d.dimValue ?? 0)),
    }
  }
  const ops: Record<string, number> = {}
  for (const n of m.graph?.node ?? []) ops[n.opType ?? ''] = (ops[n.opType ?? ''] ?? 0) + 1
  return {
    opset: Number(m.opsetImport.find((o) => !o.domain)?.version ?? 0),
    producer: m.producerName,
    inputs: (m.graph?.input ?? []).map(info),
    outputs: (m.graph?.output ?? []).map(info),
    nodes: m.graph?.node?.length ?? 0,
    initializers: m.graph?.initializer?.length ?? 0,
    ops,
  }
}
