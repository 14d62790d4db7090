/**
 * Static shapes for the backward pass. The IR records dtypes for op outputs
 * but not shapes (Reshape targets and attention masks are computed in-graph),
 * so instead of re-implementing ONNX shape inference we ask onnxruntime: run
 * the forward graph once on example feeds with every intermediate exposed as
 * an output, and record each value's dims. A train-step graph is built for a
 * fixed batch and sequence length, so static shapes lose nothing.
 */
import onnxProto from 'onnx-proto'
import * as ort from 'onnxruntime-node'
import { type Graph, onnxType } from '../graph/ir.js'
import { toOnnxModel } from '../graph/onnx.js'

const { onnx } = onnxProto

/** Value name → dims. */
export type Shapes = Map<string, number[]>

export async function probeShapes(g: Graph, feeds: Record<string, ort.Tensor>): Promise<Shapes> {
  const model = toOnnxModel(g)
  const graph = model.graph!
  const already = new Set(g.outputs.map((v) => v.name))
  const probed: string[] = []
  for (const node of g.nodes)
    for (const v of node.outputs) {
      if (already.has(v.name)) continue
      probed.push(v.name)
      graph.output!.push({ name: v.name, type: { tensorType: { elemType: onnxType(v.dtype) } } })
    }
  const bytes = onnx.ModelProto.encode(model).finish()
  const session = await ort.InferenceSession.create(bytes, {
    graphOptimizationLevel: 'disabled',
    intraOpNumThreads: 1,
  })
  try {
    const out = await session.run(feeds)
    const shapes: Shapes = new Map()
    for (const v of g.inputs) shapes.set(v.name, [...(feeds[v.name]?.dims ?? [])])
    for (const [name, init] of g.initializers) shapes.set(name, [...init.dims])
    for (const [name, t] of Object.entries(out)) shapes.set(name, [...t.dims])
    return shapes
  } finally {
    await session.release()
  }
}
