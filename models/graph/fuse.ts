/**
 * Inference-only graph rewrites, applied at export (never to graphs that are
 * differentiated, whose parameters must stay separate).
 *
 * `fuseSiblingMatMuls`: MatMuls that read the same activation with constant
 * [K, N_i] weights (Q/K/V projections, MLP gate/up) become one MatMul on the
 * concatenated [K, ΣN_i] weight followed by a Split. Fewer, larger GEMMs run
 * faster on CPU, and onnxruntime has no such fusion for plain MatMul.
 */
import type { Graph, Initializer, Node, TensorData, Value } from './ir.js'

export function fuseSiblingMatMuls(g: Graph): number {
  const groups = new Map<Value, { node: Node; init: Initializer }[]>()
  for (const node of g.nodes) {
    if (node.op !== 'MatMul') continue
    const [x, w] = node.inputs
    const init = w ? g.initializers.get(w.name) : undefined
    if (!x || !init || init.dims.length !== 2) continue
    const group = groups.get(x) ?? []
    group.push({ node, init })
    groups.set(x, group)
  }
  let fused = 0
  for (const [x, members] of groups) {
    const K = members[0].init.dims[0]
    const same = members.filter(
      (m) => m.init.dims[0] === K && m.init.value.dtype === members[0].init.value.dtype,
    )
    if (same.length < 2) continue
    const sizes = same.map((m) => m.init.dims[1])
    const weight = g.initializer(
      same.map((m) => m.init.value.name).join('+'),
      members[0].init.value.dtype,
      [K, sizes.reduce((a, b) => a + b, 0)],
      concatColumns(
        same.map((m) => m.init.data),
        K,
        sizes,
      ),
    )
    const [y] = g.op('MatMul', [x, weight], {}, { name: 'fused_matmul' })
    const outputs = same.map((m) => m.node.outputs[0])
    const ints = g.ints(sizes)
    // Rebuild in place: the fused pair takes the first member's slot, so the order stays topological.
    const first = g.nodes.indexOf(same[0].node)
    const added = g.nodes.splice(g.nodes.length - 1, 1) // the fused MatMul just appended
    const split: Node = {
      op: 'Split',
      name: `${added[0].name}_split`,
      inputs: [y, ints],
      outputs,
      attrs: { axis: { int: -1 } },
    }
    g.nodes.splice(first, 1, added[0], split)
    for (const m of same.slice(1)) g.nodes.splice(g.nodes.indexOf(m.node), 1)
    for (const m of same) if (!isUsed(g, m.init.value)) g.initializers.delete(m.init.value.name)
    fused++
  }
  return fused
}

function isUsed(g: Graph, v: Value): boolean {
  return g.nodes.some((n) => n.inputs.includes(v)) || g.outputs.includes(v)
}

/** Row-major [K, N_i] blocks side by side → [K, ΣN_i]. */
function concatColumns(blocks: TensorData[], K: number, sizes: number[]): TensorData {
  const total = sizes.reduce((a, b) => a + b, 0)
  const Ctor = blocks[0].constructor as new (n: number) => TensorData
  const out = new Ctor(K * total)
  for (let k = 0; k < K; k++) {
    let col = 0
    blocks.forEach((b, i) => {
      const n = sizes[i]
      ;(out as Float32Array).set((b as Float32Array).subarray(k * n, (k + 1) * n), k * total + col)
      col += n
    })
  }
  return out
}
