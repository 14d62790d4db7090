/**
 * Gradient checking: the analytic gradient of the emitted ONNX graph against
 * central finite differences of the same graph, both run in onnxruntime
 * (float32). The checked scalar is sum(y ⊙ R) with a fixed random R, so every
 * output element is weighted differently (micrograd `test/test_engine.py`,
 * llm.c `test_gpt2.c` compare against a reference the same way).
 */
import * as ort from 'onnxruntime-node'
import { type DType, Graph, type Value } from '../graph/ir.js'
import { serializeGraph } from '../graph/onnx.js'
import { mulberry32 } from '../llama/weights.js'
import { gradients, pruneDeadNodes } from './grad.js'
import { probeShapes } from './shapes.js'

export interface CheckInput {
  name: string
  dtype?: DType
  dims: number[]
  data: Float32Array | BigInt64Array | Uint8Array
  /** Differentiate with respect to this input (float32 only). */
  wrt?: boolean
}

export interface CheckOptions {
  /** Finite-difference step; default 5e-3. */
  h?: number
  /** Check at most this many elements per input (spread evenly); default all. */
  maxElements?: number
  seed?: number
  /** Feeds for inputs that `build` creates itself. */
  feeds?: Record<string, ort.Tensor>
}

export interface CheckResult {
  /** Largest |analytic − numeric| / (atol + rtol·|numeric|) over every checked element (≤ 1 passes). */
  worst: number
  /** Per input: analytic and numeric gradients at the checked elements. */
  details: Map<string, { analytic: number[]; numeric: number[]; index: number[] }>
}

const RTOL = 2e-2
const ATOL = 2e-3

export async function gradCheck(
  inputs: CheckInput[],
  build: (g: Graph, x: Record<string, Value>) => Value,
  o: CheckOptions = {},
): Promise<CheckResult> {
  const rand = mulberry32(o.seed ?? 7)
  const g = new Graph('grad_check')
  const vals: Record<string, Value> = {}
  for (const i of inputs) vals[i.name] = g.input(i.name, i.dtype ?? 'float32', i.dims)
  const y = build(g, vals)
  const feeds: Record<string, ort.Tensor> = { ...o.feeds }
  for (const i of inputs) feeds[i.name] = tensor(i)
  const yDims = (await probeShapes(g, feeds)).get(y.name) ?? []
  const r = g.input('R', 'float32', yDims)
  const n = yDims.reduce((a, b) => a * b, 1)
  feeds.R = new ort.Tensor(
    'float32',
    Float32Array.from({ length: n }, () => rand() * 2 - 1),
    yDims,
  )
  const loss = g.reduceSum(g.mul(g.cast(y, 'float32'), r), [], false)
  const shapes = await probeShapes(g, feeds)
  const wrt = inputs.filter((i) => i.wrt)
  const grads = gradients(
    g,
    loss,
    wrt.map((i) => vals[i.name]),
    shapes,
  )
  g.output(loss, 'loss')
  for (const i of wrt) g.output(grads.get(vals[i.name])!, `grad_${i.name}`)
  pruneDeadNodes(g)
  const session = await ort.InferenceSession.create(serializeGraph(g), { intraOpNumThreads: 1 })
  try {
    const run = async () => session.run(feeds)
    const base = await run()
    const h = o.h ?? 5e-3
    let worst = 0
    const details: CheckResult['details'] = new Map()
    for (const i of wrt) {
      const analyticAll = base[`grad_${i.name}`].data as Float32Array
      const data = i.data as Float32Array
      const count = Math.min(data.length, o.maxElements ?? data.length)
      const stride = data.length / count
      const d = { analytic: [] as number[], numeric: [] as number[], index: [] as number[] }
      for (let k = 0; k < count; k++) {
        const e = Math.floor(k * stride)
        const saved = data[e]
        data[e] = saved + h
        const plus = (await run()).loss.data[0] as number
        data[e] = saved - h
        const minus = (await run()).loss.data[0] as number
        data[e] = saved
        const numeric = (plus - minus) / (2 * h)
        d.analytic.push(analyticAll[e])
        d.numeric.push(numeric)
        d.index.push(e)
        worst = Math.max(worst, Math.abs(analyticAll[e] - numeric) / (ATOL + RTOL * Math.abs(numeric)))
      }
      details.set(i.name, d)
    }
    return { worst, details }
  } finally {
    await session.release()
  }
}

function tensor(i: CheckInput): ort.Tensor {
  const dtype = i.dtype ?? 'float32'
  return new ort.Tensor(dtype === 'bool' ? 'bool' : dtype, i.data, i.dims)
}

/** Uniform random float32 data in [lo, hi). */
export function uniform(n: number, lo: number, hi: number, seed = 1): Float32Array {
  const rand = mulberry32(seed)
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rand())
}
