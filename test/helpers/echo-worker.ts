/**
 * TEST DOUBLE of a generation worker: no model, no onnxruntime. It exists only
 * so the edge can be tested end to end before the real engine (workers/)
 * lands. It receives `{jobId, kind, requestId}` from the Queue port, reads the
 * job record, and "generates" deterministically: the prompt's words reversed,
 * one word per token, honouring max_tokens, stop sequences, n, echo and
 * cancellation (a job canceled mid-way keeps what it generated, as with the
 * real worker). It publishes `start`, `token` (when the input streams) and
 * `completed` events and moves the job running → succeeded. Given a usage
 * store, it meters the job before that as the real worker loop does
 * (workers/generation/usage.ts), the edge recording no usage for jobs.
 *
 * A prompt containing `__fail__` makes the job fail (failed event, state
 * failed), for testing error paths.
 */
import type { Events, JobEvent } from '../../core/ports/events.js'
import type { JobStore } from '../../core/ports/job-store.js'
import type { Queue } from '../../core/ports/queue.js'
import type { UsageStore } from '../../core/ports/usage-store.js'
import {
  type CanceledGeneration,
  type GenerationChoice,
  type GenerationInput,
  type GenerationOutput,
  generationInputSchema,
  queueMessageSchema,
} from '../../core/protocol.js'
import { generationMeter } from '../../workers/generation/usage.js'

export interface EchoWorkerOptions {
  queue: Queue
  jobs: JobStore
  events: Events
  /** Pause between tokens, ms. Default 0. */
  tokenDelayMs?: number
  /** Where the jobs' usage is recorded (the edge's store); none: not metered. */
  usage?: UsageStore
}

export interface EchoWorker {
  /** Jobs finished so far. */
  readonly handled: number
  stop(): Promise<void>
}

/** The text the double answers to: the prompt, or the last user message. */
export function echoSource(input: GenerationInput): string {
  if (input.prompt !== undefined) return input.prompt
  const users = (input.messages ?? []).filter((m) => m.role === 'user')
  return users.at(-1)?.content ?? ''
}

/** The double's whole answer for one choice: reversed words, cut by max_tokens and stop. */
export function echoChoice(
  input: GenerationInput,
  index: number,
): { pieces: string[]; choice: GenerationChoice } {
  const words = echoSource(input).split(/\s+/).filter(Boolean).reverse()
  const pieces: string[] = []
  let text = ''
  let finishReason: 'stop' | 'length' = 'stop'
  for (const [i, w] of words.entries()) {
    if (pieces.length >= input.sampling.maxTokens) {
      finishReason = 'length'
      break
    }
    const piece = i === 0 ? w : ` ${w}`
    const next = text + piece
    const hit = input.sampling.stop.map((s) => next.indexOf(s)).filter((at) => at >= 0)
    if (hit.length) {
      const cut = next.slice(0, Math.min(...hit))
      if (cut.length > text.length) pieces.push(cut.slice(text.length))
      text = cut
      break
    }
    pieces.push(piece)
    text = next
  }
  const full = input.echo && input.prompt !== undefined ? input.prompt + text : text
  const logprobs =
    input.sampling.logprobs === null
      ? null
      : pieces.map((p) => ({ token: p, logprob: -0.5, bytes: [...new TextEncoder().encode(p)], top: [] }))
  return { pieces, choice: { index, text: full, finishReason, logprobs } }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export function startEchoWorker(o: EchoWorkerOptions): EchoWorker {
  const controller = new AbortController()
  let handled = 0
  const meter = o.usage ? generationMeter(o.usage) : async () => {}

  async function handle(jobId: string): Promise<void> {
    const job = await o.jobs.getById(jobId)
    if (job?.state !== 'queued') return
    const input = generationInputSchema.parse(job.input)
    const { attempts: run } = await o.jobs.transition(jobId, 'running')
    let seq = 0
    const publish = (type: JobEvent['type'], data: unknown) =>
      o.events.publish({ jobId, run, seq: ++seq, type, data, at: Date.now() })
    await publish('start', { attempt: run })
    const source = echoSource(input)
    if (source.includes('__fail__')) {
      const error = { message: 'The echo worker was asked to fail.', code: 'echo_failure' }
      await o.jobs.transition(jobId, 'failed', { error })
      await publish('failed', error)
      return
    }
    const choices: GenerationChoice[] = []
    let completionTokens = 0
    const promptChars =
      input.prompt?.length ?? (input.messages ?? []).reduce((n, m) => n + m.content.length, 0)
    const promptTokens = Math.ceil(promptChars / 4)
    for (let index = 0; index < input.sampling.n; index++) {
      const { pieces, choice } = echoChoice(input, index)
      let sofar = ''
      for (const [i, text] of pieces.entries()) {
        if (o.tokenDelayMs) await sleep(o.tokenDelayMs)
        if ((await o.jobs.getById(jobId))?.cancelRequested) {
          // As the real worker: a job canceled after it generated keeps what it generated (and is metered by it).
          const generated = completionTokens + i
          const partial: CanceledGeneration | undefined = generated
            ? {
                model: input.model,
                choices: [...choices, { index, text: sofar, finishReason: null, logprobs: null }],
                usage: { promptTokens, completionTokens: generated },
              }
            : undefined
          if (partial) await meter(job, partial)
          await o.jobs.transition(jobId, 'canceled', partial ? { output: partial } : {})
          await publish('canceled', partial ?? { reason: 'canceled' })
          return
        }
        if (input.stream) await publish('token', { index, text })
        sofar += text
      }
      completionTokens += pieces.length
      choices.push(choice)
    }
    const output: GenerationOutput = {
      model: input.model,
      choices,
      usage: { promptTokens, completionTokens },
    }
    await meter(job, output)
    await o.jobs.transition(jobId, 'succeeded', { output })
    await publish('completed', output)
  }

  const loop = (async () => {
    while (!controller.signal.aborted) {
      let messages: Awaited<ReturnType<Queue['receive']>>
      try {
        messages = await o.queue.receive({ maxMessages: 10, waitTimeSeconds: 1, signal: controller.signal })
      } catch {
        if (controller.signal.aborted) break
        await sleep(50)
        continue
      }
      await Promise.all(
        messages.map(async (m) => {
          try {
            await handle(queueMessageSchema.parse(JSON.parse(m.body)).jobId)
          } finally {
            handled++
            await o.queue.ack(m.receiptHandle)
          }
        }),
      )
    }
  })()

  return {
    get handled() {
      return handled
    },
    async stop() {
      controller.abort()
      await loop
    },
  }
}
