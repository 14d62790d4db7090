/** A terminal progress bar for training (cli-progress): step, loss, tokens/s, ETA, last validation loss. */
import cliProgress from 'cli-progress'
import type { EvalReport, StepReport } from './loop.js'

export interface Progress {
  onStep: (r: StepReport) => void
  onEval: (r: EvalReport) => void
  stop: () => void
}

const duration = (ms: number) => {
  const s = Math.round(ms / 1000)
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
    : `${Math.floor(s / 60)}m${s % 60}s`
}

export function progressBar(totalSteps: number, startStep = 0): Progress {
  const bar = new cliProgress.SingleBar(
    {
      format: 'train |{bar}| {value}/{total} loss {loss} | {tps} tok/s | ETA {eta_h} | val {val}',
      barsize: 24,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 10_000,
    },
    cliProgress.Presets.shades_classic,
  )
  let val = '-'
  bar.start(totalSteps, startStep, { loss: '-', tps: '-', eta_h: '-', val })
  return {
    onStep: (r) =>
      bar.update(r.step, {
        loss: r.loss.toFixed(3),
        tps: Math.round(r.tokensPerSecond),
        eta_h: duration(r.etaMs),
        val,
      }),
    onEval: (e) => {
      val = `${e.valLoss.toFixed(3)} (ppl ${e.valPerplexity.toFixed(1)})`
      bar.update({ val })
    },
    stop: () => bar.stop(),
  }
}
