/**
 * In-graph optimizer: learning-rate schedule (linear warmup, cosine decay),
 * global-norm gradient clipping and AdamW with decoupled weight decay, in the
 * order and form of torch.optim.AdamW and nanoGPT's `get_lr`:
 *
 *   lr_t = max_lr · t / warmup                                        (t ≤ warmup)
 *        = min_lr + ½ (max_lr − min_lr)(1 + cos(π · (t − warmup)/(total − warmup)))
 *   g ← g · min(1, clip / (‖g‖₂ + 1e-6))          over all parameters together
 *   p ← p · (1 − lr_t · wd)                                   (matrices only)
 *   m ← β₁ m + (1 − β₁) g ;  v ← β₂ v + (1 − β₂) g²
 *   p ← p − lr_t / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
 *
 * t is the 1-based step number (the `step` input is the number of steps done).
 */
import type { Graph, Value } from '../graph/ir.js'

export interface OptimizerConfig {
  /** Peak learning rate, reached at the end of warmup. */
  lr: number
  /** Learning rate at the end of the cosine; default lr / 10. */
  minLr?: number
  /** Linear warmup steps; default 0. */
  warmupSteps?: number
  /** Steps of the whole schedule (the cosine ends here and stays at minLr). */
  totalSteps: number
  /** Default 0.9. */
  beta1?: number
  /** Default 0.95. */
  beta2?: number
  /** Default 1e-8. */
  eps?: number
  /** Decoupled weight decay for matrices (norm weights are never decayed); default 0.1. */
  weightDecay?: number
  /** Max global gradient norm; default 1. 0 turns clipping off. */
  clipNorm?: number
}

export interface Param {
  name: string
  value: Value
  grad: Value
  m: Value
  v: Value
  decay: boolean
  /** This tensor's learning rate as a multiple of the schedule's (LoRA+); default 1. */
  lrScale?: number
}

export interface Updated {
  lr: Value
  gradNorm: Value
  params: { name: string; value: Value; m: Value; v: Value }[]
}

/** Learning rate at 1-based step `t` (float32 scalar). */
export function scheduledLr(g: Graph, t: Value, o: OptimizerConfig): Value {
  const warmup = o.warmupSteps ?? 0
  const minLr = o.minLr ?? o.lr / 10
  const s = (x: number) => g.scalar(x)
  const warm = g.mul(t, s(o.lr / Math.max(1, warmup)))
  const progress = g.op('Min', [
    g.op('Max', [g.div(g.sub(t, s(warmup)), s(Math.max(1, o.totalSteps - warmup))), s(0)])[0],
    s(1),
  ])[0]
  const cosine = g.add(
    s(minLr),
    g.mul(s(0.5 * (o.lr - minLr)), g.add(s(1), g.cos(g.mul(progress, s(Math.PI))))),
  )
  return g.where(g.lessOrEqual(t, s(warmup)), warm, cosine)
}

export function adamw(g: Graph, step: Value, params: Param[], o: OptimizerConfig): Updated {
  const b1 = o.beta1 ?? 0.9
  const b2 = o.beta2 ?? 0.95
  const eps = o.eps ?? 1e-8
  const wd = o.weightDecay ?? 0.1
  const s = (x: number) => g.scalar(x)
  const t = g.add(g.cast(step, 'float32'), s(1))
  const lr = scheduledLr(g, t, o)
  // Global norm over all gradients.
  const squares = params.map((p) => g.reduceSum(g.mul(p.grad, p.grad), [], false))
  const sumSq = squares.reduce((a, b) => g.add(a, b))
  const gradNorm = g.sqrt(sumSq)
  const clip = o.clipNorm ?? 1
  const scale = clip > 0 ? g.op('Min', [s(1), g.div(s(clip), g.add(gradNorm, s(1e-6)))])[0] : s(1)
  const stepSize = g.div(lr, g.sub(s(1), g.pow(s(b1), t))) // lr / (1 − β₁ᵗ)
  const invSqrtBc2 = g.reciprocal(g.sqrt(g.sub(s(1), g.pow(s(b2), t)))) // 1 / √(1 − β₂ᵗ)
  const decayFactor = g.sub(s(1), g.mul(lr, s(wd)))
  return {
    lr,
    gradNorm,
    params: params.map((p) => {
      const grad = clip > 0 ? g.mul(p.grad, scale) : p.grad
      const m = g.add(g.mul(p.m, s(b1)), g.mul(grad, s(1 - b1)))
      const v = g.add(g.mul(p.v, s(b2)), g.mul(g.mul(grad, grad), s(1 - b2)))
      const k = p.lrScale ?? 1
      const decayed =
        p.decay && wd > 0
          ? g.mul(p.value, k === 1 ? decayFactor : g.sub(s(1), g.mul(lr, s(wd * k))))
          : p.value
      const denom = g.add(g.mul(g.sqrt(v), invSqrtBc2), s(eps))
      const value = g.sub(decayed, g.mul(g.div(m, denom), k === 1 ? stepSize : g.mul(stepSize, s(k))))
      return { name: p.name, value, m, v }
    }),
  }
}
