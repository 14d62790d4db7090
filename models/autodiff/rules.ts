/**
 * Backward rules, one row per ONNX op: given the node and the gradients of its
 * outputs (dy, null where an output gets no gradient), return one gradient per
 * input (null where an input is not differentiable: indices, shapes, masks).
 * Gradients are IR nodes of the same graph. Rules may emit gradients for inputs
 * that need none; dead-node elimination drops them (as tinygrad does).
 *
 * Composite ops lower to primitives here: Gemm's backward is Gemms, Softmax's
 * is Mul/Sub/ReduceSum, Gather's is a ScatterND that adds.
 *
 * References: tinygrad `tinygrad/gradient.py` (pm_gradient), micrograd
 * `micrograd/engine.py`, PyTorch `tools/autograd/derivatives.yaml`.
 */
import type { Graph, Node, Value } from '../graph/ir.js'

export interface GradContext {
  readonly g: Graph
  /** Static dims of a forward value (probed). */
  shape(v: Value): number[]
  /** Values of a constant int64 initializer (axes, split sizes). */
  ints(v: Value): number[]
  /** True when `v` is a float initializer whose every element equals `x`. */
  isConstant(v: Value, x: number): boolean
}

export type BackwardRule = (c: GradContext, node: Node, dys: readonly (Value | null)[]) => (Value | null)[]

const int = (n: Node, name: string, dflt: number): number => {
  const a = n.attrs[name]
  return a && 'int' in a ? a.int : dflt
}
const intList = (n: Node, name: string): number[] | undefined => {
  const a = n.attrs[name]
  return a && 'ints' in a ? a.ints : undefined
}
const norm = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis)
const same = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i])

/** Sums `dx` (dims `from`) down to dims `to`, undoing numpy broadcasting. */
export function unbroadcast(
  c: GradContext,
  dx: Value,
  from: readonly number[],
  to: readonly number[],
): Value {
  if (same(from, to)) return dx
  const lead = from.length - to.length
  const axes: number[] = []
  for (let i = 0; i < from.length; i++) if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i)
  const summed = axes.length ? c.g.reduceSum(dx, axes, true) : dx
  return c.g.reshape(summed, to)
}

/** Float32 zeros of the given dims (ConstantOfShape defaults to float32 0). */
function zeros(c: GradContext, dims: readonly number[]): Value {
  return c.g.op('ConstantOfShape', [c.g.ints(dims)], {}, { dtype: 'float32' })[0]
}

/** Swaps the last two axes. */
function swapLast(c: GradContext, x: Value, rank: number): Value {
  const perm = Array.from({ length: rank }, (_, i) => i)
  ;[perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]]
  return c.g.transpose(x, perm)
}

/** dy of a reduction, reshaped to keepdims form and expanded back to the input's dims. */
function expandReduced(
  c: GradContext,
  dy: Value,
  x: Value,
  axes: number[] | undefined,
  keepdims: boolean,
): Value {
  const xs = c.shape(x)
  const all = axes?.length ? axes.map((a) => norm(a, xs.length)) : xs.map((_, i) => i)
  const kept = xs.map((d, i) => (all.includes(i) ? 1 : d))
  const dyKept = keepdims ? dy : c.g.reshape(dy, kept)
  return c.g.expand(dyKept, c.g.ints(xs))
}

function gemmFlags(transA: boolean, transB: boolean) {
  return { transA, transB }
}

/** Elementwise binary rule: local gradients (broadcast to y's dims), then unbroadcast to each input. */
function binary(
  local: (c: GradContext, a: Value, b: Value, y: Value, dy: Value) => [Value, Value],
): BackwardRule {
  return (c, n, [dy]) => {
    const [a, b] = n.inputs as Value[]
    const ys = c.shape(n.outputs[0])
    const [da, db] = local(c, a, b, n.outputs[0], dy!)
    return [unbroadcast(c, da, ys, c.shape(a)), unbroadcast(c, db, ys, c.shape(b))]
  }
}

export const RULES: Record<string, BackwardRule> = {
  Identity: (_c, _n, [dy]) => [dy],
  Cast: (c, n, [dy]) => {
    const x = n.inputs[0]!
    return [x.dtype === 'float32' || x.dtype === 'float16' ? c.g.cast(dy!, x.dtype) : null]
  },
  Neg: (c, _n, [dy]) => [c.g.neg(dy!)],
  Add: binary((_c, _a, _b, _y, dy) => [dy, dy]),
  Sub: binary((c, _a, _b, _y, dy) => [dy, c.g.neg(dy)]),
  Mul: binary((c, a, b, _y, dy) => [c.g.mul(dy, b), c.g.mul(dy, a)]),
  Div: binary((c, _a, b, y, dy) => [c.g.div(dy, b), c.g.neg(c.g.div(c.g.mul(dy, y), b))]),
  // d(a^b)/da = b·a^(b-1) (2a for a constant b = 2, as RMSNorm squares); d/db = y·ln(a)
  // (NaN for a < 0, pruned when b is a constant).
  Pow: binary((c, a, b, y, dy) => [
    c.isConstant(b, 2)
      ? c.g.mul(dy, c.g.mul(a, c.g.scalar(2)))
      : c.g.mul(dy, c.g.mul(b, c.g.pow(a, c.g.sub(b, c.g.scalar(1))))),
    c.g.mul(dy, c.g.mul(y, c.g.op('Log', [a])[0])),
  ]),
  Sqrt: (c, n, [dy]) => [c.g.div(c.g.mul(dy!, c.g.scalar(0.5)), n.outputs[0])],
  Reciprocal: (c, n, [dy]) => {
    const y = n.outputs[0]
    return [c.g.neg(c.g.mul(dy!, c.g.mul(y, y)))]
  },
  Exp: (c, n, [dy]) => [c.g.mul(dy!, n.outputs[0])],
  Log: (c, n, [dy]) => [c.g.div(dy!, n.inputs[0]!)],
  Sin: (c, n, [dy]) => [c.g.mul(dy!, c.g.cos(n.inputs[0]!))],
  Cos: (c, n, [dy]) => [c.g.neg(c.g.mul(dy!, c.g.sin(n.inputs[0]!)))],
  Sigmoid: (c, n, [dy]) => {
    const y = n.outputs[0]
    return [c.g.mul(dy!, c.g.mul(y, c.g.sub(c.g.scalar(1), y)))]
  },
  Tanh: (c, n, [dy]) => {
    const y = n.outputs[0]
    return [c.g.mul(dy!, c.g.sub(c.g.scalar(1), c.g.mul(y, y)))]
  },
  Relu: (c, n, [dy]) => {
    const x = n.inputs[0]!
    return [c.g.where(c.g.op('Greater', [x, c.g.scalar(0)])[0], dy!, c.g.scalar(0))]
  },
  Where: (c, n, [dy]) => {
    const [cond, a, b] = n.inputs as Value[]
    const ys = c.shape(n.outputs[0])
    const zero = c.g.scalar(0)
    return [
      null,
      unbroadcast(c, c.g.where(cond, dy!, zero), ys, c.shape(a)),
      unbroadcast(c, c.g.where(cond, zero, dy!), ys, c.shape(b)),
    ]
  },
  // Y = A·B over the last two axes, batch axes broadcast. A 2-D B (a weight) gets
  // its gradient from one Gemm over the flattened rows instead of a batched MatMul.
  MatMul: (c, n, [dy]) => {
    const [a, b] = n.inputs as Value[]
    const as = c.shape(a)
    const bs = c.shape(b)
    const ys = c.shape(n.outputs[0])
    if (as.length < 2 || bs.length < 2) throw new Error('autodiff: MatMul backward needs inputs of rank >= 2')
    const da = c.g.matmul(dy!, swapLast(c, b, bs.length))
    const daShape = [...ys.slice(0, -2), as[as.length - 2], as[as.length - 1]]
    let db: Value
    if (bs.length === 2) {
      const K = as[as.length - 1]
      const N = bs[1]
      db = c.g.gemm(c.g.reshape(a, [-1, K]), c.g.reshape(dy!, [-1, N]), null, gemmFlags(true, false))
    } else {
      const prod = c.g.matmul(swapLast(c, a, as.length), dy!)
      db = unbroadcast(c, prod, [...ys.slice(0, -2), bs[bs.length - 2], bs[bs.length - 1]], bs)
    }
    return [unbroadcast(c, da, daShape, as), db]
  },
  // Y = alpha·A'·B' + beta·C with A' = transA ? Aᵀ : A, B' likewise.
  Gemm: (c, n, [dy]) => {
    const [a, b, cIn] = n.inputs
    const tA = int(n, 'transA', 0) === 1
    const tB = int(n, 'transB', 0) === 1
    const alpha = n.attrs.alpha && 'float' in n.attrs.alpha ? n.attrs.alpha.float : 1
    const beta = n.attrs.beta && 'float' in n.attrs.beta ? n.attrs.beta.float : 1
    const d = alpha === 1 ? dy! : c.g.mul(dy!, c.g.scalar(alpha))
    const da = tA ? c.g.gemm(b!, d, null, gemmFlags(tB, true)) : c.g.gemm(d, b!, null, gemmFlags(false, !tB))
    const db = tB ? c.g.gemm(d, a!, null, gemmFlags(true, tA)) : c.g.gemm(a!, d, null, gemmFlags(!tA, false))
    const dc = cIn
      ? unbroadcast(c, beta === 1 ? dy! : c.g.mul(dy!, c.g.scalar(beta)), c.shape(n.outputs[0]), c.shape(cIn))
      : null
    return cIn ? [da, db, dc] : [da, db]
  },
  ReduceSum: (c, n, [dy]) => {
    const [x, axes] = n.inputs
    return [expandReduced(c, dy!, x!, axes ? c.ints(axes) : undefined, int(n, 'keepdims', 1) === 1), null]
  },
  ReduceMean: (c, n, [dy]) => {
    const x = n.inputs[0]!
    const xs = c.shape(x)
    const axes = (intList(n, 'axes') ?? xs.map((_, i) => i)).map((a) => norm(a, xs.length))
    const count = axes.reduce((p, a) => p * xs[a], 1)
    const full = expandReduced(c, dy!, x, axes, int(n, 'keepdims', 1) === 1)
    return [c.g.mul(full, c.g.scalar(1 / count))]
  },
  // dx = y ⊙ (dy − Σ dy⊙y)
  Softmax: (c, n, [dy]) => {
    const y = n.outputs[0]
    const axis = int(n, 'axis', -1)
    return [c.g.mul(y, c.g.sub(dy!, c.g.reduceSum(c.g.mul(dy!, y), [axis], true)))]
  },
  // dx = dy − exp(y) ⊙ Σ dy
  LogSoftmax: (c, n, [dy]) => {
    const y = n.outputs[0]
    const axis = int(n, 'axis', -1)
    return [c.g.sub(dy!, c.g.mul(c.g.exp(y), c.g.reduceSum(dy!, [axis], true)))]
  },
  Reshape: (c, n, [dy]) => [c.g.reshape(dy!, c.shape(n.inputs[0]!)), null],
  Unsqueeze: (c, n, [dy]) => [c.g.reshape(dy!, c.shape(n.inputs[0]!)), null],
  Squeeze: (c, n, [dy]) => [c.g.reshape(dy!, c.shape(n.inputs[0]!)), null],
  Flatten: (c, n, [dy]) => [c.g.reshape(dy!, c.shape(n.inputs[0]!))],
  Transpose: (c, n, [dy]) => {
    const rank = c.shape(n.inputs[0]!).length
    const perm = intList(n, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i)
    const inverse = new Array<number>(rank)
    perm.forEach((p, i) => {
      inverse[p] = i
    })
    return [c.g.transpose(dy!, inverse)]
  },
  Expand: (c, n, [dy]) => [unbroadcast(c, dy!, c.shape(n.outputs[0]), c.shape(n.inputs[0]!)), null],
  // Outputs without a gradient contribute zeros to the concatenation.
  Split: (c, n, dys) => {
    const axis = int(n, 'axis', 0)
    const parts = n.outputs.map((y, i) => dys[i] ?? zeros(c, c.shape(y)))
    return [c.g.concat(parts, axis), null]
  },
  Concat: (c, n, [dy]) => {
    const rank = c.shape(n.outputs[0]).length
    const axis = norm(int(n, 'axis', 0), rank)
    let offset = 0
    return n.inputs.map((x) => {
      const len = c.shape(x!)[axis]
      const slice = c.g.op('Slice', [dy!, c.g.ints([offset]), c.g.ints([offset + len]), c.g.ints([axis])])[0]
      offset += len
      return slice
    })
  },
  // Rows picked by index (embedding lookup): scatter-add dy back into zeros.
  Gather: (c, n, [dy]) => {
    const [data, indices] = n.inputs as Value[]
    if (int(n, 'axis', 0) !== 0) throw new Error('autodiff: Gather backward supports axis 0 only')
    const at = c.g.unsqueeze(indices, [-1])
    const dData = c.g.op('ScatterND', [zeros(c, c.shape(data)), at, dy!], { reduction: { string: 'add' } })[0]
    return [dData, null]
  },
  GatherElements: (c, n, [dy]) => {
    const [data, indices] = n.inputs as Value[]
    const axis = int(n, 'axis', 0)
    const dData = c.g.op('ScatterElements', [zeros(c, c.shape(data)), indices, dy!], {
      axis: { int: axis },
      reduction: { string: 'add' },
    })[0]
    return [dData, null]
  },
}

/** The rule for `op`; throws naming the op when there is none. */
export function ruleFor(op: string): BackwardRule {
  const rule = RULES[op]
  if (!rule) throw new Error(`autodiff: no backward rule for ONNX op '${op}'`)
  return rule
}
