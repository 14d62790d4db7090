/** Test support: generation inputs (greedy sampling unless told otherwise). */
import type { GenerationInput, Sampling } from '../../core/protocol.js'

export const greedy: Sampling = {
  maxTokens: 16,
  temperature: 0,
  topP: 1,
  topK: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  stop: [],
  n: 1,
  logprobs: null,
}

/** A completions input for `model`, greedy with `sampling` overrides. */
export const completion = (
  model: string,
  prompt: string,
  sampling: Partial<Sampling> = {},
): GenerationInput => ({
  endpoint: 'completions',
  model,
  prompt,
  sampling: { ...greedy, ...sampling },
  stream: false,
  echo: false,
})
