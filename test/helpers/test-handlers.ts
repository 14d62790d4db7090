/**
 * Job kinds for tests only. A worker registers them when started with
 * PGPT_HANDLER_MODULES=test/helpers/test-handlers.ts, so they never exist in a
 * production worker.
 *
 * - `test.sleep` {ms, steps?, output?, ignoreAbort?}: sleeps `ms` in `steps`
 *   pieces, publishing a `progress` event after each and an `output` event at
 *   the end; stops early when its signal fires (unless ignoreAbort).
 * - `test.fail` {message?, permanent?, times?}: throws a PermanentError, or a
 *   TransientError on the first `times` runs (then succeeds).
 * - `test.crash`: kills its own process with SIGKILL (a poison job).
 */
import { z } from 'zod'
import { PermanentError, TransientError } from '../../workers/errors.js'
import type { JobHandler } from '../../workers/worker-loop.js'

const sleepInput = z.object({
  ms: z.number().int().min(0).max(600_000),
  steps: z.number().int().min(1).max(1000).default(1),
  output: z.unknown().optional(),
  ignoreAbort: z.boolean().default(false),
})

export const sleepHandler: JobHandler = async ({ job, signal, publish }) => {
  const input = sleepInput.parse(job.input)
  const step = input.ms / input.steps
  for (let i = 1; i <= input.steps; i++) {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(done, step)
      function done() {
        signal.removeEventListener('abort', onAbort)
        resolve()
      }
      function onAbort() {
        if (input.ignoreAbort) return
        clearTimeout(t)
        reject(signal.reason)
      }
      if (signal.aborted && !input.ignoreAbort) return reject(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
    })
    await publish('progress', { step: i, of: input.steps })
  }
  const output = input.output ?? { slept: input.ms, pid: process.pid }
  await publish('output', output)
  return output
}

const failInput = z.object({
  message: z.string().default('test failure'),
  permanent: z.boolean().default(false),
  /** Fail transiently on runs 1..times, succeed after. Unset: always fail. */
  times: z.number().int().min(0).optional(),
})

export const failHandler: JobHandler = async ({ job }) => {
  const input = failInput.parse(job.input)
  if (input.permanent) throw new PermanentError(input.message, { code: 'test_permanent' })
  if (input.times === undefined || job.attempts <= input.times)
    throw new TransientError(input.message, { code: 'test_transient' })
  return { attempts: job.attempts }
}

export const crashHandler: JobHandler = async ({ logger }) => {
  logger.warn('test.crash: killing this process')
  process.kill(process.pid, 'SIGKILL')
  await new Promise(() => {})
}

export const handlers: Record<string, JobHandler> = {
  'test.sleep': sleepHandler,
  'test.fail': failHandler,
  'test.crash': crashHandler,
}
