/**
 * Reverse-mode differentiation over the graph IR: walk `graph.nodes` backwards
 * from a scalar loss, apply each node's rule from `RULES`, and sum gradients
 * that reach a value by several paths. Gradients are appended to the same
 * graph as ordinary nodes, so the train step is one ONNX graph.
 *
 * Reference: micrograd `engine.py` (`backward`), tinygrad `gradient.py` (`compute_gradient`).
 */
import type { Graph, Node, Value } from '../graph/ir.js'
import { type GradContext, ruleFor } from './rules.js'
import type { Shapes } from './shapes.js'

const isFloat = (v: Value) => v.dtype === 'float32' || v.dtype === 'float16'

/** Returns d loss / d w for each w in `wrt` (a zero tensor when the loss does not depend on w). */
export function gradients(g: Graph, loss: Value, wrt: readonly Value[], shapes: Shapes): Map<Value, Value> {
  const ctx = context(g, shapes)
  // Forward: which values depend on a parameter.
  const live = new Set<Value>(wrt)
  for (const n of g.nodes)
    if (n.inputs.some((x) => x && live.has(x))) for (const y of n.outputs) if (isFloat(y)) live.add(y)
  // Backward, in reverse build order (a reverse topological order).
  const grads = new Map<Value, Value>([[loss, g.constant(loss.dtype, ctx.shape(loss), [1])]])
  const accumulate = (v: Value, d: Value) => {
    const prev = grads.get(v)
    grads.set(v, prev ? g.add(prev, d) : d)
  }
  const forward: Node[] = [...g.nodes]
  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i]
    const dys = n.outputs.map((y) => grads.get(y) ?? null)
    if (dys.every((d) => d === null)) continue
    if (!n.inputs.some((x) => x && live.has(x))) continue
    const dxs = ruleFor(n.op)(ctx, n, dys)
    n.inputs.forEach((x, k) => {
      const dx = dxs[k]
      if (x && dx && live.has(x)) accumulate(x, dx)
    })
  }
  return new Map(
    wrt.map((w) => [
      w,
      grads.get(w) ?? g.op('ConstantOfShape', [g.ints(ctx.shape(w))], {}, { dtype: 'float32' })[0],
    ]),
  )
}

function context(g: Graph, shapes: Shapes): GradContext {
  return {
    g,
    shape(v) {
      const s = shapes.get(v.name)
      if (!s) throw new Error(`autodiff: no shape for '${v.name}' (probe the graph before differentiating)`)
      return s
    },
    ints(v) {
      const init = g.initializers.get(v.name)
      if (!init || !(init.data instanceof BigInt64Array))
        throw new Error(`autodiff: '${v.name}' must be a constant int64 initializer`)
      return Array.from(init.data, Number)
    },
    isConstant(v, x) {
      const init = g.initializers.get(v.name)
      return (
        !!init && init.data instanceof Float32Array && init.data.length > 0 && init.data.every((e) => e === x)
      )
    },
  }
}

/** Drops nodes (and initializers) that no graph output depends on. Returns how many nodes went. */
export function pruneDeadNodes(g: Graph): number {
  const needed = new Set<string>(g.outputs.map((v) => v.name))
  const keep: Node[] = []
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]
    if (!n.outputs.some((y) => needed.has(y.name))) continue
    keep.push(n)
    for (const x of n.inputs) if (x) needed.add(x.name)
  }
  const removed = g.nodes.length - keep.length
  g.nodes.splice(0, g.nodes.length, ...keep.reverse())
  for (const name of [...g.initializers.keys()]) if (!needed.has(name)) g.initializers.delete(name)
  return removed
}
