/**
 * The training loop: one visible `for` over steps — batch, step, report,
 * evaluate, checkpoint — that stops cleanly on an abort signal (after
 * saving a checkpoint). Metrics go to a JSONL file, one object per line.
 */
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { saveCheckpoint } from './checkpoint.js'
import { BatchSchedule, type Dataset, makeBatch, valBatches } from './data.js'
import type { StepMetrics, TrainSession } from './session.js'

export interface StepReport extends StepMetrics {
  totalSteps: number
  tokensPerSecond: number
  elapsedMs: number
  /** Estimated time to the last step. */
  etaMs: number
}

export interface EvalReport {
  step: number
  valLoss: number
  /** exp(valLoss) */
  valPerplexity: number
  valTokens: number
}

export interface LoopOptions {
  session: TrainSession
  data: Dataset
  /** Step count to reach (the session may already be past 0 when resumed). */
  steps: number
  seed: number
  /** Evaluate every N steps and at the end; 0 = only at the end. */
  evalEvery?: number
  /** Validation batches per evaluation; default all. */
  evalBatches?: number
  /** Also evaluate before the first step (when starting at step 0). */
  evalAtStart?: boolean
  checkpointDir?: string
  /** Save a checkpoint every N steps (and at the end, and on abort); default 0 = end only. */
  checkpointEvery?: number
  /** Extra fields for trainer_state.json. */
  checkpointMeta?: Record<string, unknown>
  metricsPath?: string
  onStep?: (r: StepReport) => void
  onEval?: (r: EvalReport) => void
  signal?: AbortSignal
}

export interface LoopResult {
  steps: number
  history: StepMetrics[]
  evals: EvalReport[]
  aborted: boolean
}

export async function trainLoop(o: LoopOptions): Promise<LoopResult> {
  const s = o.session
  const schedule = new BatchSchedule(o.data.trainWindows, s.batch, o.seed)
  const history: StepMetrics[] = []
  const evals: EvalReport[] = []
  if (o.metricsPath) {
    await mkdir(dirname(o.metricsPath), { recursive: true })
    await truncateMetrics(o.metricsPath, s.stepsDone)
  }
  const log = (x: object) => (o.metricsPath ? appendFile(o.metricsPath, `${JSON.stringify(x)}\n`) : undefined)
  let pausedMs = 0 // time spent evaluating and checkpointing, left out of tokens/s and ETA
  const evaluate = async () => {
    const t0 = performance.now()
    const r = await s.evaluate(valBatches(o.data, s.batch, o.evalBatches))
    pausedMs += performance.now() - t0
    const e = { step: s.stepsDone, valLoss: r.loss, valPerplexity: Math.exp(r.loss), valTokens: r.tokens }
    evals.push(e)
    o.onEval?.(e)
    await log({
      type: 'eval',
      step: e.step,
      val_loss: e.valLoss,
      val_ppl: e.valPerplexity,
      val_tokens: e.valTokens,
    })
  }
  const checkpoint = async () => {
    const t0 = performance.now()
    if (o.checkpointDir)
      await saveCheckpoint(o.checkpointDir, s.state(), { seed: o.seed, ...o.checkpointMeta })
    pausedMs += performance.now() - t0
  }
  if (o.evalAtStart && s.stepsDone === 0 && o.data.valWindows.length) await evaluate()
  const started = performance.now()
  const firstStep = s.stepsDone
  let tokens = 0
  let aborted = false
  while (s.stepsDone < o.steps) {
    if (o.signal?.aborted) {
      aborted = true
      break
    }
    const r = await s.run(makeBatch(o.data, schedule.starts(s.stepsDone)))
    history.push(r)
    tokens += s.batch * s.seqLen
    const elapsedMs = performance.now() - started
    const trainingMs = elapsedMs - pausedMs
    const perStep = trainingMs / (r.step - firstStep)
    o.onStep?.({
      ...r,
      totalSteps: o.steps,
      tokensPerSecond: (tokens / trainingMs) * 1000,
      elapsedMs,
      etaMs: perStep * (o.steps - r.step),
    })
    await log({
      type: 'train',
      step: r.step,
      loss: r.loss,
      lr: r.lr,
      grad_norm: r.gradNorm,
      tokens_per_s: (tokens / trainingMs) * 1000,
      time_s: elapsedMs / 1000,
    })
    if (!Number.isFinite(r.loss)) throw new Error(`train: loss is ${r.loss} at step ${r.step}`)
    if (o.evalEvery && r.step % o.evalEvery === 0 && r.step < o.steps) await evaluate()
    if (o.checkpointEvery && r.step % o.checkpointEvery === 0 && r.step < o.steps) await checkpoint()
  }
  if (!aborted && o.data.valWindows.length) await evaluate()
  await checkpoint()
  return { steps: s.stepsDone, history, evals, aborted }
}

/** Drops metric lines past `step` (a resumed run rewrites them). */
async function truncateMetrics(path: string, step: number): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => null)
  if (text === null) return
  const keep = text
    .split('\n')
    .filter((l) => l.trim() && (JSON.parse(l) as { step: number }).step <= step && step > 0)
  await writeFile(path, keep.map((l) => `${l}\n`).join(''))
}

/** Reads a metrics JSONL file. */
export async function readMetrics(path: string): Promise<Record<string, number | string>[]> {
  const text = await readFile(path, 'utf8')
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l))
}
