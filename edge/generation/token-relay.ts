/**
 * What a streaming client is sent of a generation's token events when its job
 * runs more than once. A job whose worker was lost is run again (core/ports/
 * events.ts: a newer run), and the new run streams its tokens from the start;
 * the client already has some of them. The worker samples a rerun with the
 * same seed (the request's, or one derived from the job id:
 * workers/generation/prng.ts `seedOf`), so the new run normally repeats the
 * text already sent: that part is skipped, per choice, and the stream goes on
 * after it. A rerun may still differ (another worker's hardware or model
 * build rounding differently): then the text cannot be spliced, and the relay
 * throws (502, code `job_rerun_diverged`) for the stream to end with that
 * error instead: never a silent splice.
 */
import { ApiError } from '../../core/errors.js'

export const RERUN_DIVERGED = 'job_rerun_diverged'

/** A rerun of a streamed job generated other text than the client already received. */
export const rerunDiverged = (jobId: string, index: number) =>
  new ApiError(
    502,
    `The job ${jobId} was run again after its worker was lost, and choice ${index} of the new run differs from the text already streamed; the stream ends here. Retry the request.`,
    { code: RERUN_DIVERGED },
  )

export class TokenRelay {
  private run: number | undefined
  /** Per choice: the text the client has. */
  private readonly sent = new Map<number, string>()
  /** Per choice: how much of it the current run has repeated. */
  private repeated = new Map<number, number>()

  constructor(private readonly jobId: string) {}

  /**
   * The part of a token event of `run` the client does not have yet: the whole
   * text, its unsent end, or '' when a rerun repeats text already sent.
   * Throws (rerunDiverged) when the rerun's text differs from it.
   */
  next(run: number, index: number, text: string): string {
    if (run !== this.run) {
      this.run = run
      this.repeated = new Map()
    }
    const sent = this.sent.get(index) ?? ''
    const at = this.repeated.get(index) ?? 0
    this.repeated.set(index, at + text.length)
    if (at >= sent.length) {
      this.sent.set(index, sent + text)
      return text
    }
    const overlap = sent.slice(at, at + text.length)
    if (!text.startsWith(overlap)) throw rerunDiverged(this.jobId, index)
    const fresh = text.slice(overlap.length)
    if (fresh) this.sent.set(index, sent + fresh)
    return fresh
  }

  /**
   * At the job's end: the error (rerunDiverged) when a choice of the last run
   * ended short of the text already sent (the client has text the result lacks).
   */
  shortfall(): ApiError | undefined {
    for (const [index, sent] of this.sent)
      if ((this.repeated.get(index) ?? 0) < sent.length) return rerunDiverged(this.jobId, index)
    return undefined
  }
}
