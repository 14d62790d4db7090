/**
 * A small graph IR that serializes to ONNX: typed values, and nodes named by
 * their ONNX op type. The model builder (`models/llama/graph.ts`) writes the
 * forward pass with it, and a reverse-mode autodiff can walk `graph.nodes`
 * backwards with one rule per `node.op`.
 *
 * - A `Value` is an edge: a name, an element type and (where known) a shape.
 *   Graph inputs and initializers carry shapes; op outputs carry only dtypes.
 * - A `Node` is one ONNX op: `op` (ONNX op type), `inputs` (null for an
 *   omitted optional input), `outputs`, `attrs` (tagged by ONNX attribute type).
 * - Nodes are kept in the order they were built, which is a topological order.
 *
 * Standard ONNX ops (domain ""), opset `OPSET` unless the serializer is told
 * otherwise; a node may name another domain (onnxruntime's contrib ops).
 */
import { toHalfBits } from '../half.js'

export const OPSET = 17

export type DType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool'
/** A dimension: a size, or a symbolic name such as 'batch_size'. */
export type Dim = number | string

/** ONNX attribute values, tagged because JS numbers do not say int or float. */
export type Attr =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { string: string }

export class Value {
  constructor(
    /** Unique in its graph; graph outputs are renamed by `Graph.output`. */
    public name: string,
    readonly dtype: DType,
    readonly shape?: readonly Dim[],
  ) {}
}

export interface Node {
  readonly op: string
  readonly name: string
  readonly inputs: readonly (Value | null)[]
  readonly outputs: readonly Value[]
  readonly attrs: Readonly<Record<string, Attr>>
  /** Operator domain: '' (standard ONNX) unless set, e.g. 'com.microsoft' for onnxruntime's contrib ops. */
  readonly domain?: string
}

/** Element storage of an initializer: float16 is stored as its bit pattern. */
export type TensorData = Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array

export interface Initializer {
  readonly value: Value
  readonly dims: readonly number[]
  readonly data: TensorData
}

/** Output dtype of an op when it is not the dtype of its first input. */
const BOOL_OPS = new Set([
  'Equal',
  'Less',
  'LessOrEqual',
  'Greater',
  'GreaterOrEqual',
  'And',
  'Or',
  'Not',
  'Xor',
])

export class Graph {
  readonly inputs: Value[] = []
  readonly outputs: Value[] = []
  readonly nodes: Node[] = []
  readonly initializers = new Map<string, Initializer>()
  private readonly names = new Set<string>()
  private readonly constants = new Map<string, Value>()
  private counter = 0

  constructor(readonly name = 'graph') {}

  /** A fresh value name with the given stem. */
  fresh(stem: string): string {
    let name = stem
    while (this.names.has(name)) name = `${stem}_${++this.counter}`
    this.names.add(name)
    return name
  }

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    if (this.names.has(name)) throw new Error(`graph: duplicate name '${name}'`)
    this.names.add(name)
    const v = new Value(name, dtype, shape)
    this.inputs.push(v)
    return v
  }

  /** Marks `v` as a graph output called `name` (renaming it, or adding an Identity when it is an input). */
  output(v: Value, name: string, shape?: readonly Dim[]): Value {
    const isSource = this.inputs.includes(v) || this.initializers.has(v.name) || this.outputs.includes(v)
    let out = v
    if (isSource) out = this.op('Identity', [v])[0]
    if (out.name !== name) {
      if (this.names.has(name)) throw new Error(`graph: duplicate name '${name}'`)
      this.names.delete(out.name)
      this.names.add(name)
      out.name = name
    }
    const typed = shape ? Object.assign(out, { shape }) : out
    this.outputs.push(typed)
    return typed
  }

  initializer(name: string, dtype: DType, dims: readonly number[], data: TensorData): Value {
    const n = dims.reduce((a, b) => a * b, 1)
    if (data.length !== n)
      throw new Error(`graph: initializer '${name}' has ${data.length} elements, dims say ${n}`)
    const v = new Value(this.fresh(name), dtype, dims)
    this.initializers.set(v.name, { value: v, dims: [...dims], data })
    return v
  }

  /** A small constant tensor (deduplicated), stored as an initializer. */
  constant(dtype: DType, dims: readonly number[], values: readonly number[]): Value {
    const key = `${dtype}|${dims.join(',')}|${values.join(',')}`
    const hit = this.constants.get(key)
    if (hit) return hit
    let data: TensorData
    if (dtype === 'int64') data = BigInt64Array.from(values, (x) => BigInt(x))
    else if (dtype === 'int32') data = Int32Array.from(values)
    else if (dtype === 'float32') data = Float32Array.from(values)
    else if (dtype === 'bool') data = Uint8Array.from(values)
    else if (dtype === 'float16') data = Uint16Array.from(values, toHalfBits)
    else throw new Error(`graph: constant of dtype ${dtype} must go through initializer()`)
    const v = this.initializer(`const_${dtype}`, dtype, dims, data)
    this.constants.set(key, v)
    return v
  }

  /** A 1-D int64 constant, for shapes, axes and indices. */
  ints(values: readonly number[]): Value {
    return this.constant('int64', [values.length], values)
  }

  /** A scalar constant. */
  scalar(x: number, dtype: DType = 'float32'): Value {
    return this.constant(dtype, [], [x])
  }

  /** Appends one node; returns its outputs. The generic entry point for any ONNX op. */
  op(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, Attr> = {},
    opts: { outputs?: number; dtype?: DType; name?: string; domain?: string } = {},
  ): Value[] {
    const first = inputs.find((x): x is Value => x !== null)
    const dtype = opts.dtype ?? (BOOL_OPS.has(op) ? 'bool' : first?.dtype)
    if (!dtype) throw new Error(`graph: cannot infer the output dtype of ${op}`)
    const stem = opts.name ?? op.toLowerCase()
    const outputs = Array.from({ length: opts.outputs ?? 1 }, () => new Value(this.fresh(stem), dtype))
    const node: Node = { op, name: this.fresh(`${op}_node`), inputs, outputs, attrs }
    this.nodes.push(opts.domain ? { ...node, domain: opts.domain } : node)
    return outputs
  }

  private one(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, Attr> = {},
    dtype?: DType,
  ) {
    return this.op(op, inputs, attrs, { dtype })[0]
  }

  // Elementwise arithmetic (numpy broadcasting).
  add = (a: Value, b: Value) => this.one('Add', [a, b])
  sub = (a: Value, b: Value) => this.one('Sub', [a, b])
  mul = (a: Value, b: Value) => this.one('Mul', [a, b])
  div = (a: Value, b: Value) => this.one('Div', [a, b])
  pow = (a: Value, b: Value) => this.one('Pow', [a, b])
  neg = (a: Value) => this.one('Neg', [a])
  sqrt = (a: Value) => this.one('Sqrt', [a])
  reciprocal = (a: Value) => this.one('Reciprocal', [a])
  exp = (a: Value) => this.one('Exp', [a])
  sin = (a: Value) => this.one('Sin', [a])
  cos = (a: Value) => this.one('Cos', [a])
  sigmoid = (a: Value) => this.one('Sigmoid', [a])
  identity = (a: Value) => this.one('Identity', [a])
  cast = (a: Value, to: DType) =>
    a.dtype === to ? a : this.one('Cast', [a], { to: { int: onnxType(to) } }, to)

  // Comparisons and logic (bool outputs).
  lessOrEqual = (a: Value, b: Value) => this.one('LessOrEqual', [a, b])
  and = (a: Value, b: Value) => this.one('And', [a, b])
  where = (cond: Value, a: Value, b: Value) => this.op('Where', [cond, a, b], {}, { dtype: a.dtype })[0]

  // Linear algebra and reductions.
  matmul = (a: Value, b: Value) => this.one('MatMul', [a, b])
  /** alpha * A' B' + beta * C on 2-D inputs; transB reads B as [N, K]. */
  gemm = (a: Value, b: Value, c: Value | null = null, o: { transA?: boolean; transB?: boolean } = {}) =>
    this.one('Gemm', c ? [a, b, c] : [a, b], {
      transA: { int: o.transA ? 1 : 0 },
      transB: { int: o.transB ? 1 : 0 },
    })
  reduceMean = (a: Value, axes: number[], keepdims = true) =>
    this.one('ReduceMean', [a], { axes: { ints: axes }, keepdims: { int: keepdims ? 1 : 0 } })
  reduceSum = (a: Value, axes: number[], keepdims = true) =>
    this.one('ReduceSum', [a, this.ints(axes)], { keepdims: { int: keepdims ? 1 : 0 } })
  softmax = (a: Value, axis = -1) => this.one('Softmax', [a], { axis: { int: axis } })

  // Shapes and indexing.
  shape = (a: Value) => this.one('Shape', [a], {}, 'int64')
  reshape = (a: Value, shape: Value | readonly number[]) =>
    this.one('Reshape', [a, shape instanceof Value ? shape : this.ints(shape)])
  transpose = (a: Value, perm: number[]) => this.one('Transpose', [a], { perm: { ints: perm } })
  unsqueeze = (a: Value, axes: number[]) => this.one('Unsqueeze', [a, this.ints(axes)])
  squeeze = (a: Value, axes: number[]) => this.one('Squeeze', [a, this.ints(axes)])
  concat = (xs: Value[], axis: number) => this.one('Concat', xs, { axis: { int: axis } })
  split = (a: Value, sizes: number[], axis: number) =>
    this.op('Split', [a, this.ints(sizes)], { axis: { int: axis } }, { outputs: sizes.length })
  gather = (data: Value, indices: Value, axis = 0) =>
    this.one('Gather', [data, indices], { axis: { int: axis } })
  range = (start: Value, limit: Value, delta: Value) => this.one('Range', [start, limit, delta])
  expand = (a: Value, shape: Value) => this.one('Expand', [a, shape])
}

/** ONNX TensorProto.DataType codes. */
export function onnxType(d: DType): number {
  switch (d) {
    case 'float32':
      return 1
    case 'int32':
      return 6
    case 'int64':
      return 7
    case 'bool':
      return 9
    case 'float16':
      return 10
  }
}
