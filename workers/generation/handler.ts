/**
 * The `generation` job handler the worker loop calls: parse the job input
 * (core/protocol.ts), run the engine, publish token events while it runs
 * (only when the caller streams), and return the output the job record keeps;
 * when its signal stops it mid-way, throw StoppedEarly with what was generated.
 * The context is a structural subset of the worker loop's, so it plugs in.
 */
import { z } from 'zod'
import { type GenerationOutput, generationInputSchema, type TokenEventData } from '../../core/protocol.js'
import { StoppedEarly } from '../errors.js'
import type { GenerationEngine } from './engine.js'
import { GenerationCancelled, invalidParameter } from './errors.js'
import { seedOf } from './prng.js'

export interface GenerationJobContext {
  job: { id: string; input: unknown }
  signal: AbortSignal
  publish(type: 'token', data: TokenEventData): Promise<void>
}

export type GenerationHandler = (ctx: GenerationJobContext) => Promise<GenerationOutput>

export function createGenerationHandler(engine: Pick<GenerationEngine, 'generate'>): GenerationHandler {
  return async function generationHandler(ctx) {
    const parsed = generationInputSchema.safeParse(ctx.job.input)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      throw invalidParameter(
        issue?.path.map(String).join('.') || 'input',
        `Invalid generation input: ${z.prettifyError(parsed.error)}`,
      )
    }
    const input = parsed.data
    try {
      return await engine.generate(input, {
        signal: ctx.signal,
        onToken: input.stream ? (data) => ctx.publish('token', data) : undefined,
        // A rerun of this job (redelivered) samples what the first run did: a stream that
        // already relayed run 1's tokens continues with the same text (edge/generation/respond.ts).
        defaultSeed: seedOf(ctx.job.id),
      })
    } catch (err) {
      // Stopped by its signal (e.g. canceled: its streaming client left) after it began generating:
      // hand over what it generated, which a canceled job keeps and its worker meters.
      if (err instanceof GenerationCancelled && err.partial)
        throw new StoppedEarly(err.partial, { cause: err })
      throw err
    }
  }
}
