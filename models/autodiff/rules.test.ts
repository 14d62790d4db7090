/**
 * Every backward rule against central finite differences of the emitted ONNX
 * graph, run in onnxruntime (float32, small random inputs).
 */
import { describe, expect, it } from 'vitest'
import { Graph, type Value } from '../graph/ir.js'
import { type CheckInput, gradCheck, uniform } from './check.js'
import { gradients } from './grad.js'
import { RULES } from './rules.js'
import { probeShapes } from './shapes.js'

const numel = (dims: number[]) => dims.reduce((a, b) => a * b, 1)
let seed = 10
const f = (name: string, dims: number[], lo = -1, hi = 1): CheckInput => ({
  name,
  dims,
  data: uniform(numel(dims), lo, hi, seed++),
  wrt: true,
})
const ids = (name: string, dims: number[], values: number[]): CheckInput => ({
  name,
  dims,
  dtype: 'int64',
  data: BigInt64Array.from(values, BigInt),
})

type Case = [
  op: string,
  variant: string,
  inputs: CheckInput[],
  build: (g: Graph, x: Record<string, Value>) => Value,
]

const unary = (op: string, lo = -1, hi = 1): Case => [
  op,
  '',
  [f('a', [2, 3], lo, hi)],
  (g, x) => g.op(op, [x.a])[0],
]

const cases: Case[] = [
  unary('Identity'),
  ['Cast', 'float32 → float32', [f('a', [2, 3])], (g, x) => g.op('Cast', [x.a], { to: { int: 1 } })[0]],
  unary('Neg'),
  ['Add', 'broadcast', [f('a', [2, 3, 4]), f('b', [3, 1])], (g, x) => g.add(x.a, x.b)],
  ['Sub', 'broadcast', [f('a', [3, 1]), f('b', [2, 3, 4])], (g, x) => g.sub(x.a, x.b)],
  ['Mul', 'broadcast', [f('a', [2, 3, 4]), f('b', [4])], (g, x) => g.mul(x.a, x.b)],
  ['Div', 'broadcast', [f('a', [2, 3]), f('b', [2, 1], 0.5, 2)], (g, x) => g.div(x.a, x.b)],
  ['Pow', 'base and exponent', [f('a', [2, 3], 0.5, 2), f('b', [3], 0.5, 2.5)], (g, x) => g.pow(x.a, x.b)],
  ['Pow', 'constant square', [f('a', [2, 3])], (g, x) => g.pow(x.a, g.scalar(2))],
  unary('Sqrt', 0.5, 2),
  unary('Reciprocal', 0.5, 2),
  unary('Exp'),
  unary('Log', 0.5, 2),
  unary('Sin'),
  unary('Cos'),
  unary('Sigmoid', -3, 3),
  unary('Tanh'),
  [
    'Relu',
    'away from 0',
    [{ ...f('a', [2, 3]), data: Float32Array.from([-1, 0.5, -0.3, 0.7, 1.2, -2]) }],
    (g, x) => g.op('Relu', [x.a])[0],
  ],
  [
    'Where',
    'broadcast',
    [
      { name: 'c', dims: [2, 3], dtype: 'bool', data: Uint8Array.from([1, 0, 1, 1, 0, 0]) },
      f('a', [2, 3]),
      f('b', [3]),
    ],
    (g, x) => g.where(x.c, x.a, x.b),
  ],
  ['MatMul', '2-D', [f('a', [3, 4]), f('b', [4, 5])], (g, x) => g.matmul(x.a, x.b)],
  ['MatMul', 'batched × weight', [f('a', [2, 3, 4]), f('b', [4, 5])], (g, x) => g.matmul(x.a, x.b)],
  ['MatMul', 'broadcast batch', [f('a', [2, 1, 3, 4]), f('b', [3, 4, 2])], (g, x) => g.matmul(x.a, x.b)],
  ...(
    [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const
  ).map(
    ([transA, transB]): Case => [
      'Gemm',
      `transA=${transA} transB=${transB} with bias`,
      [f('a', transA ? [4, 3] : [3, 4]), f('b', transB ? [5, 4] : [4, 5]), f('c', [5])],
      (g, x) => g.gemm(x.a, x.b, x.c, { transA, transB }),
    ],
  ),
  [
    'Gemm',
    'alpha and beta',
    [f('a', [3, 4]), f('b', [4, 2]), f('c', [3, 1])],
    (g, x) => g.op('Gemm', [x.a, x.b, x.c], { alpha: { float: 0.5 }, beta: { float: 2 } })[0],
  ],
  ['ReduceSum', 'axes, keepdims', [f('a', [2, 3, 4])], (g, x) => g.reduceSum(x.a, [1], true)],
  [
    'ReduceSum',
    'negative axis, no keepdims',
    [f('a', [2, 3, 4])],
    (g, x) => g.reduceSum(x.a, [0, -1], false),
  ],
  ['ReduceMean', 'keepdims', [f('a', [2, 3, 4])], (g, x) => g.reduceMean(x.a, [-1], true)],
  ['ReduceMean', 'no keepdims', [f('a', [2, 3, 4])], (g, x) => g.reduceMean(x.a, [1], false)],
  ['Softmax', 'last axis', [f('a', [2, 5], -2, 2)], (g, x) => g.softmax(x.a, -1)],
  ['Softmax', 'axis 0', [f('a', [3, 2], -2, 2)], (g, x) => g.softmax(x.a, 0)],
  [
    'LogSoftmax',
    'last axis',
    [f('a', [2, 5], -2, 2)],
    (g, x) => g.op('LogSoftmax', [x.a], { axis: { int: -1 } })[0],
  ],
  ['Reshape', '', [f('a', [2, 6])], (g, x) => g.reshape(x.a, [3, -1])],
  ['Unsqueeze', '', [f('a', [2, 3])], (g, x) => g.unsqueeze(x.a, [0, 2])],
  ['Squeeze', '', [f('a', [2, 1, 3])], (g, x) => g.squeeze(x.a, [1])],
  ['Flatten', '', [f('a', [2, 3, 2])], (g, x) => g.op('Flatten', [x.a], { axis: { int: 1 } })[0]],
  ['Transpose', 'perm', [f('a', [2, 3, 4])], (g, x) => g.transpose(x.a, [2, 0, 1])],
  ['Expand', 'broadcast', [f('a', [3, 1])], (g, x) => g.expand(x.a, g.ints([2, 3, 4]))],
  ['Split', 'one output unused', [f('a', [2, 6])], (g, x) => g.split(x.a, [2, 4], -1)[1]],
  [
    'Split',
    'both outputs',
    [f('a', [4, 3])],
    (g, x) => {
      const [p, q] = g.split(x.a, [1, 3], 0)
      return g.mul(g.reduceSum(p, [0], true), q)
    },
  ],
  [
    'Concat',
    'with an empty input',
    [f('a', [2, 3]), f('b', [2, 0]), f('c', [2, 2])],
    (g, x) => g.concat([x.a, x.b, x.c], 1),
  ],
  [
    'Gather',
    'embedding rows, repeated ids',
    [f('w', [5, 3]), ids('i', [2, 3], [0, 4, 4, 2, 0, 4])],
    (g, x) => g.gather(x.w, x.i),
  ],
  [
    'GatherElements',
    'repeated ids',
    [f('a', [3, 4]), ids('i', [3, 2], [1, 1, 0, 3, 2, 2])],
    (g, x) => g.op('GatherElements', [x.a, x.i], { axis: { int: 1 } })[0],
  ],
]

describe('backward rules vs finite differences', () => {
  it.each(cases)('%s (%s)', async (_op, _variant, inputs, build) => {
    const r = await gradCheck(inputs, build)
    expect(r.worst).toBeLessThanOrEqual(1)
    for (const d of r.details.values())
      expect(d.analytic.some((v) => v !== 0) || d.analytic.length === 0).toBe(true)
  })

  it('has a finite-difference case for every rule', () => {
    const checked = new Set(cases.map(([op]) => op))
    expect(Object.keys(RULES).filter((op) => !checked.has(op))).toEqual([])
  })

  it('throws naming the op when a rule is missing', async () => {
    const g = new Graph()
    const a = g.input('a', 'float32', [3])
    const y = g.reduceSum(g.op('Erf', [a])[0], [], false)
    const shapes = await probeShapes(g, {
      a: new (await import('onnxruntime-node')).Tensor('float32', new Float32Array(3), [3]),
    })
    expect(() => gradients(g, y, [a], shapes)).toThrow(/no backward rule for ONNX op 'Erf'/)
  })

  it('catches a wrong rule (the check can fail)', async () => {
    const saved = RULES.Sigmoid
    RULES.Sigmoid = (c, n, [dy]) => [c.g.mul(dy!, n.outputs[0])] // wrong: dy·y
    try {
      const r = await gradCheck([f('a', [2, 3])], (g, x) => g.sigmoid(x.a))
      expect(r.worst).toBeGreaterThan(1)
    } finally {
      RULES.Sigmoid = saved
    }
  })
})
