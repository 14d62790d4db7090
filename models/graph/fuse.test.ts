import * as ort from 'onnxruntime-node'
import { describe, expect, it } from 'vitest'
import { fuseSiblingMatMuls } from './fuse.js'
import { Graph } from './ir.js'
import { serializeGraph } from './onnx.js'

function build() {
  const g = new Graph()
  const x = g.input('x', 'float32', [2, 3])
  const w = (name: string, n: number, seed: number) =>
    g.initializer(
      name,
      'float32',
      [3, n],
      Float32Array.from({ length: 3 * n }, (_, i) => ((i * seed) % 7) - 3),
    )
  const a = g.matmul(x, w('a', 2, 3))
  const b = g.matmul(x, w('b', 4, 5))
  const other = g.matmul(g.neg(x), w('c', 1, 2)) // different input: not fused
  g.output(g.add(a, g.scalar(1)), 'ya')
  g.output(g.mul(b, g.scalar(2)), 'yb')
  g.output(other, 'yc')
  return g
}

const run = async (g: Graph) => {
  const s = await ort.InferenceSession.create(serializeGraph(g))
  const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from([1, -2, 0.5, 3, 0, -1]), [2, 3]) })
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, [...(t.data as Float32Array)]]))
}

describe('fuseSiblingMatMuls', () => {
  it('merges MatMuls sharing an input into one MatMul + Split with the same results', async () => {
    const before = await run(build())
    const g = build()
    expect(fuseSiblingMatMuls(g)).toBe(1)
    expect(g.nodes.filter((n) => n.op === 'MatMul')).toHaveLength(2)
    const split = g.nodes.find((n) => n.op === 'Split')!
    expect(g.initializers.get(g.nodes[g.nodes.indexOf(split) - 1].inputs[1]!.name)!.dims).toEqual([3, 6])
    expect(g.initializers.has('a')).toBe(false)
    expect(await run(g)).toEqual(before)
  })
})
