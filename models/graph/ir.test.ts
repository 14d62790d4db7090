import * as ort from 'onnxruntime-node'
import { describe, expect, it } from 'vitest'
import { toHalf } from '../half.js'
import { Graph } from './ir.js'
import { describeOnnx, serializeGraph } from './onnx.js'

const run = async (g: Graph, feeds: Record<string, ort.Tensor>) => {
  const s = await ort.InferenceSession.create(serializeGraph(g))
  return s.run(feeds)
}

describe('graph IR', () => {
  it('builds typed nodes named by ONNX op and serializes to a model onnxruntime runs', async () => {
    const g = new Graph('affine')
    const x = g.input('x', 'float32', ['n', 2])
    const w = g.initializer('w', 'float32', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]))
    const y = g.add(g.matmul(x, w), g.scalar(0.5))
    g.output(g.softmax(y, -1), 'probs', ['n', 3])
    g.output(y, 'y')
    expect(g.nodes.map((n) => n.op)).toEqual(['MatMul', 'Add', 'Softmax'])
    expect(g.nodes[0].inputs).toEqual([x, w])
    const out = await run(g, { x: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 1]), [2, 2]) })
    expect([...(out.y.data as Float32Array)]).toEqual([1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    const p = out.probs.data as Float32Array
    expect(p[0] + p[1] + p[2]).toBeCloseTo(1, 6)
    expect(p[2]).toBeGreaterThan(p[1])
  })

  it('infers output dtypes: Cast, Shape, comparisons, Where', () => {
    const g = new Graph()
    const a = g.input('a', 'int64', [3])
    expect(g.cast(a, 'float16').dtype).toBe('float16')
    expect(g.cast(a, 'int64')).toBe(a) // no-op cast is not emitted
    expect(g.shape(a).dtype).toBe('int64')
    const b = g.lessOrEqual(a, a)
    expect(b.dtype).toBe('bool')
    expect(g.where(b, g.scalar(1), g.scalar(0)).dtype).toBe('float32')
    expect(g.split(a, [1, 2], 0).map((v) => v.dtype)).toEqual(['int64', 'int64'])
  })

  it('deduplicates constants and keeps names unique', () => {
    const g = new Graph()
    expect(g.ints([0, 0, 4])).toBe(g.ints([0, 0, 4]))
    expect(g.scalar(2)).not.toBe(g.scalar(2, 'int64'))
    const x = g.input('x', 'float32', [1])
    const names = [g.neg(x), g.neg(x), g.neg(x)].map((v) => v.name)
    expect(new Set(names).size).toBe(3)
    expect(() => g.input('x', 'float32', [1])).toThrow(/duplicate/)
    expect(() => g.initializer('w', 'float32', [2, 2], new Float32Array(3))).toThrow(/3 elements/)
  })

  it('passes an input through to an output via Identity, and writes float16 initializers', async () => {
    const g = new Graph()
    const x = g.input('x', 'float16', [2])
    g.output(x, 'same')
    const h = g.initializer('h', 'float16', [2], toHalf(Float32Array.from([1.5, -2])))
    g.output(g.add(x, h), 'sum')
    const out = await run(g, { x: new ort.Tensor('float16', Uint16Array.from([0x3c00, 0x3c00]), [2]) })
    expect([...(out.same.data as Uint16Array)]).toEqual([0x3c00, 0x3c00])
    expect([...(out.sum.data as Uint16Array)]).toEqual([0x4100, 0xbc00]) // 2.5, -1
    expect(describeOnnx(serializeGraph(g)).ops).toEqual({ Identity: 1, Add: 1 })
  })

  it('serializes attributes: ints, floats via ops, and reduce axes', async () => {
    const g = new Graph()
    const x = g.input('x', 'float32', [2, 3])
    g.output(g.transpose(x, [1, 0]), 't')
    g.output(g.reduceMean(x, [-1]), 'm')
    g.output(g.gemm(x, x, null, { transB: true }), 'xxT')
    const data = Float32Array.from([1, 2, 3, 4, 5, 6])
    const out = await run(g, { x: new ort.Tensor('float32', data, [2, 3]) })
    expect(out.t.dims).toEqual([3, 2])
    expect([...(out.t.data as Float32Array)]).toEqual([1, 4, 2, 5, 3, 6])
    expect([...(out.m.data as Float32Array)]).toEqual([2, 5])
    expect([...(out.xxT.data as Float32Array)]).toEqual([14, 32, 32, 77])
  })
})
