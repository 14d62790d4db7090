import { describe, expect, it, vi } from 'vitest'
import { ApiError } from '../../core/errors.js'
import type { GenerationInput, GenerationOutput, TokenEventData } from '../../core/protocol.js'
import { StoppedEarly } from '../errors.js'
import type { GenerateOptions } from './engine.js'
import { GenerationCancelled, generationCancelled } from './errors.js'
import { createGenerationHandler } from './handler.js'
import { seedOf } from './prng.js'

const output: GenerationOutput = {
  model: 'm',
  choices: [{ index: 0, text: 'hi', finishReason: 'stop', logprobs: null }],
  usage: { promptTokens: 1, completionTokens: 1 },
}

function fakeEngine() {
  const calls: Array<{ input: GenerationInput; options: GenerateOptions }> = []
  return {
    calls,
    generate: vi.fn(async (input: GenerationInput, options: GenerateOptions = {}) => {
      calls.push({ input, options })
      await options.onToken?.({ index: 0, text: 'h' })
      await options.onToken?.({ index: 0, text: 'i' })
      return output
    }),
  }
}

const job = (input: unknown) => ({ id: 'job_1', input })
const valid = { endpoint: 'completions', model: 'm', prompt: 'x', sampling: { maxTokens: 2 } }

describe('createGenerationHandler', () => {
  it('parses the input with defaults, passes the signal, publishes tokens when streaming', async () => {
    const engine = fakeEngine()
    const handler = createGenerationHandler(engine)
    const published: TokenEventData[] = []
    const signal = new AbortController().signal
    const result = await handler({
      job: job({ ...valid, stream: true }),
      signal,
      publish: async (type, data) => {
        expect(type).toBe('token')
        published.push(data)
      },
    })
    expect(result).toEqual(output)
    expect(published.map((d) => d.text).join('')).toBe('hi')
    expect(engine.calls[0].options.signal).toBe(signal)
    // A seed of the job's own: a rerun of the job samples the same tokens.
    expect(engine.calls[0].options.defaultSeed).toBe(seedOf('job_1'))
    expect(seedOf('job_1')).not.toBe(seedOf('job_2'))
    expect(engine.calls[0].input.sampling).toMatchObject({ temperature: 1, n: 1, stop: [], logprobs: null })
  })

  it('stopped mid-way, throws StoppedEarly with what the engine generated; before that, the cancel as is', async () => {
    const partial = {
      model: 'm',
      choices: [{ index: 0, text: 'h', finishReason: null, logprobs: null }],
      usage: { promptTokens: 1, completionTokens: 1 },
    }
    const cancelledWith = (p?: typeof partial) => ({
      generate: vi.fn(async () => {
        throw generationCancelled(p)
      }),
    })
    const run = (engine: ReturnType<typeof cancelledWith>) =>
      createGenerationHandler(engine)({
        job: job(valid),
        signal: AbortSignal.abort(),
        publish: async () => {},
      }).catch((e: unknown) => e)
    const stopped = await run(cancelledWith(partial))
    expect(stopped).toBeInstanceOf(StoppedEarly)
    expect((stopped as StoppedEarly).output).toEqual(partial)
    const early = await run(cancelledWith())
    expect(early).toBeInstanceOf(GenerationCancelled)
  })

  it('does not publish when the caller does not stream', async () => {
    const engine = fakeEngine()
    const publish = vi.fn(async () => {})
    await createGenerationHandler(engine)({ job: job(valid), signal: new AbortController().signal, publish })
    expect(publish).not.toHaveBeenCalled()
    expect(engine.calls[0].options.onToken).toBeUndefined()
  })

  it('rejects bad input with a typed 400 naming the field', async () => {
    const engine = fakeEngine()
    const err = await createGenerationHandler(engine)({
      job: job({ ...valid, sampling: { maxTokens: 0 } }),
      signal: new AbortController().signal,
      publish: async () => {},
    }).catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect([err.status, err.code, err.param]).toEqual([400, 'invalid_parameter', 'sampling.maxTokens'])
    expect(engine.generate).not.toHaveBeenCalled()
  })

  // The one check of the sampling bounds on the worker side: the engine trusts what parses.
  it.each([
    [{ topP: 0 }, 'sampling.topP'],
    [{ temperature: 2.5 }, 'sampling.temperature'],
    [{ topK: 1.5 }, 'sampling.topK'],
    [{ presencePenalty: 3 }, 'sampling.presencePenalty'],
    [{ repetitionPenalty: 0 }, 'sampling.repetitionPenalty'],
    [{ n: 17 }, 'sampling.n'],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'sampling.stop'],
    [{ logprobs: 21 }, 'sampling.logprobs'],
    [{ maxTokens: 32_769 }, 'sampling.maxTokens'],
  ])('rejects sampling %o out of the protocol bounds before the engine runs', async (bad, param) => {
    const engine = fakeEngine()
    const err = await createGenerationHandler(engine)({
      job: job({ ...valid, sampling: { ...valid.sampling, ...bad } }),
      signal: new AbortController().signal,
      publish: async () => {},
    }).catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect([err.status, err.code, err.param]).toEqual([400, 'invalid_parameter', param])
    expect(engine.generate).not.toHaveBeenCalled()
  })
})
