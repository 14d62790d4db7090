/**
 * Mean token cross-entropy with an ignore index, written in primitives that
 * have backward rules: LogSoftmax, GatherElements, masking and a mean over
 * the counted tokens (torch.nn.functional.cross_entropy(ignore_index=-100)).
 */
import type { Graph, Value } from '../graph/ir.js'

export const IGNORE_INDEX = -100

export interface Loss {
  /** Mean negative log-likelihood over counted targets, a scalar. */
  loss: Value
  /** Number of counted targets (float32 scalar). */
  count: Value
}

/** logits (B,T,V) float32, targets (B,T) int64 where `ignoreIndex` marks tokens without a loss. */
export function crossEntropy(
  g: Graph,
  logits: Value,
  targets: Value,
  vocabSize: number,
  ignoreIndex = IGNORE_INDEX,
): Loss {
  const flat = g.reshape(logits, [-1, vocabSize]) // (N,V)
  const logp = g.op('LogSoftmax', [flat], { axis: { int: -1 } })[0]
  const t = g.reshape(targets, [-1]) // (N)
  const counted = g.op('Not', [g.op('Equal', [t, g.scalar(ignoreIndex, 'int64')])[0]])[0]
  const safe = g.where(counted, t, g.scalar(0, 'int64'))
  const picked = g.op('GatherElements', [logp, g.unsqueeze(safe, [1])], { axis: { int: 1 } })[0] // (N,1)
  const mask = g.cast(counted, 'float32')
  const nll = g.mul(g.neg(g.reshape(picked, [-1])), mask)
  const count = g.reduceSum(mask, [], false)
  const loss = g.div(g.reduceSum(nll, [], false), g.op('Max', [count, g.scalar(1)])[0])
  return { loss, count }
}
