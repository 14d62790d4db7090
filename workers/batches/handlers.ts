/**
 * The worker side of batches: two job kinds.
 *
 * - `batch` (one per batch, on the main queue): reads the input file, checks
 *   every line (request.ts), writes each bad line's result at once, stores the
 *   good ones as chunks of `linesPerChunk`, moves the batch to `in_progress`
 *   and enqueues one `batch_chunk` job per chunk. Short: it only plans.
 * - `batch_chunk`: runs its lines through the same generation engine as
 *   interactive requests, concurrently, so the engine's continuous batching
 *   decodes them together (and with interactive requests). Each line's result
 *   is written create-once (batches-store.ts), so a chunk delivered again
 *   (worker killed, lease lost) skips the lines already done: nothing is run
 *   into the output twice, nothing is lost. The chunk then marks itself done
 *   in the batch record (compare-and-swap); the chunk that completes the set
 *   finalizes the batch (finalize.ts).
 *
 * Priority (lower than interactive traffic), two limits, both per process:
 * chunks run in their own loop with few slots (worker.ts: the main loop's
 * slots never wait behind a chunk), and batch lines hold at most
 * `maxLinesInFlight` (default half) of the engine's rows, so an interactive
 * request always finds rows free and joins the running batch at once.
 *
 * Cancel and expiry are checked before each line starts (the batch record is
 * re-read at most every `statusPollMs`): lines not started are left out and
 * finalization writes them to the error file (batch_cancelled, batch_expired).
 */
import { ApiError } from '../../core/errors.js'
import { splitJsonl } from '../../core/jsonl.js'
import type { Logger } from '../../core/logger.js'
import { chatBody, completionBody } from '../../core/openai/format.js'
import { isTerminal, type JobStore } from '../../core/ports/job-store.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import type { Queue } from '../../core/ports/queue.js'
import type { UsageStore } from '../../core/ports/usage-store.js'
import type { GenerationOutput, QueueMessageBody } from '../../core/protocol.js'
import {
  type BatchError,
  type BatchObject,
  type BatchRecord,
  getBatch,
  getChunk,
  getResult,
  isTerminalBatch,
  liveCounts,
  type PlannedLine,
  putChunk,
  putResult,
  type StoredResult,
  updateBatch,
} from '../../core/records/batches.js'
import { getFileRecord, readFileText } from '../../core/records/files.js'
import type { ModelCatalog } from '../../core/records/model-catalog.js'
import { PermanentError } from '../errors.js'
import type { GenerationEngine } from '../generation/engine.js'
import type { JobContext, JobHandler } from '../worker-loop.js'
import { finalizeBatch } from './finalize.js'
import { Limiter } from './limiter.js'
import { checkLine } from './request.js'

export const BATCH_KIND = 'batch'
export const BATCH_CHUNK_KIND = 'batch_chunk'
export const DEFAULT_LINES_PER_CHUNK = 32
/** OpenAI's cap on requests per batch. */
export const DEFAULT_MAX_BATCH_LINES = 50_000

export interface BatchHandlerDeps {
  store: ObjectStore
  jobs: JobStore
  /** Where `batch_chunk` messages go (worker.ts: their own queue when the profile has one). */
  chunkQueue: Queue
  engine: Pick<GenerationEngine, 'generate' | 'maxBatchSize'>
  /** Model visibility and token counts for line checks (core/records/model-catalog.ts). */
  models: ModelCatalog
  /** Deliveries after which the queue dead-letters a message: on the last one, a line's unexpected error is recorded instead of retried. */
  maxReceiveCount: number
  /** Metered usage: one record per successful line (kind `batch`, id = the line's request id, so a rerun adds none). */
  usage?: UsageStore
  /** Told once a batch ends (webhooks). Must not throw. */
  notify?: (b: BatchRecord) => void | Promise<void>
  /** Default 32. */
  linesPerChunk?: number
  /** Most lines (requests) one batch's input file may hold; more fails validation (`too_many_lines`). Default 50,000 (OpenAI's cap; PGPT_MAX_BATCH_LINES). */
  maxLines?: number
  /** Batch lines generating at once in this process; default half the engine's rows (at least 1). */
  maxLinesInFlight?: number
  /** How often a running chunk re-reads the batch for cancel. Default 500 ms. */
  statusPollMs?: number
  logger?: Logger
}

export interface BatchHandlers {
  batch: JobHandler
  batch_chunk: JobHandler
  /** For the chunk queue's dead-letter drain: fail a chunk's unfinished lines and count it done. */
  abandonChunk(tenant: string, batchId: string, chunk: number): Promise<void>
}

const now = () => Math.floor(Date.now() / 1000)
/** Line errors a batch that fails validation keeps in `errors` (the first ones: the batch object stays small). */
const MAX_LINE_ERRORS = 1000
export const requestIdOf = (batchId: string, line: number) =>
  `batch_req_${batchId.slice('batch_'.length)}_${line}`
export const chunkJobId = (batchId: string, n: number) => `${batchId}_c${n}`

function inputOf(ctx: JobContext): { batchId: string; chunk?: number } {
  const i = ctx.job.input as { batchId?: unknown; chunk?: unknown } | null
  if (!i || typeof i.batchId !== 'string')
    throw new PermanentError('batch job input lacks batchId', { code: 'invalid_input' })
  return { batchId: i.batchId, ...(typeof i.chunk === 'number' ? { chunk: i.chunk } : {}) }
}

export function createBatchHandlers(d: BatchHandlerDeps): BatchHandlers {
  const perChunk = d.linesPerChunk ?? DEFAULT_LINES_PER_CHUNK
  const maxLines = d.maxLines ?? DEFAULT_MAX_BATCH_LINES
  const lines = new Limiter(d.maxLinesInFlight ?? Math.max(1, Math.floor(d.engine.maxBatchSize / 2)))
  const pollMs = d.statusPollMs ?? 500
  const { store } = d

  const finalize = (tenant: string, batchId: string, log?: Logger) =>
    finalizeBatch({ store, notify: d.notify, logger: log ?? d.logger }, tenant, batchId)

  async function failBatch(
    tenant: string,
    batchId: string,
    errors: BatchError[],
    counts?: BatchObject['request_counts'],
  ): Promise<void> {
    const b = await updateBatch(store, tenant, batchId, (cur) =>
      isTerminalBatch(cur.status)
        ? null
        : {
            ...cur,
            status: 'failed',
            failed_at: now(),
            errors: { object: 'list', data: errors },
            ...(counts ? { request_counts: counts } : {}),
          },
    )
    if (b?.status === 'failed') await d.notify?.(b)
  }
  const fileError = (code: string, message: string): BatchError[] => [
    { code, message, param: 'input_file_id', line: null },
  ]

  /** Creates the chunk's job unless it exists, and sends its message (again after a crash: harmless, results are create-once). */
  async function enqueueChunk(b: BatchRecord, n: number, log: Logger | undefined): Promise<void> {
    const id = chunkJobId(b.id, n)
    let job = await d.jobs.getById(id)
    if (!job) {
      try {
        job = await d.jobs.create({
          id,
          tenant: b.internal.tenant,
          kind: BATCH_CHUNK_KIND,
          input: { batchId: b.id, chunk: n },
          ...(b.internal.requestId ? { requestId: b.internal.requestId } : {}),
          ...(b.internal.apiKeyId ? { apiKeyId: b.internal.apiKeyId } : {}),
        })
      } catch (err) {
        job = await d.jobs.getById(id)
        if (!job) throw err
      }
    }
    if (isTerminal(job.state)) {
      log?.warn({ chunkJobId: id, state: job.state }, 'chunk job ended without marking its chunk done')
      return
    }
    const message: QueueMessageBody = {
      jobId: id,
      kind: BATCH_CHUNK_KIND,
      requestId: b.internal.requestId ?? undefined,
    }
    await d.chunkQueue.send(JSON.stringify(message))
  }

  async function plan(ctx: JobContext, b: BatchRecord): Promise<BatchRecord | null> {
    const tenant = b.internal.tenant
    const text = await readFileText(store, tenant, b.input_file_id)
    if (text === null) {
      const f = await getFileRecord(store, tenant, b.input_file_id)
      await failBatch(
        tenant,
        b.id,
        fileError(
          'invalid_input_file',
          f?.expires_at
            ? `The input file ${b.input_file_id} expired at ${new Date(f.expires_at * 1000).toISOString()}.`
            : `The input file ${b.input_file_id} no longer exists.`,
        ),
      )
      return null
    }
    const all = splitJsonl(text)
    if (!all.length) {
      await failBatch(tenant, b.id, fileError('empty_file', 'The input file has no lines.'))
      return null
    }
    if (all.length > maxLines) {
      // Checked before any line: a huge file fails at once, with nothing planned or run.
      await failBatch(
        tenant,
        b.id,
        fileError(
          'too_many_lines',
          `The input file has ${all.length} lines; a batch may hold at most ${maxLines} requests (PGPT_MAX_BATCH_LINES).`,
        ),
      )
      return null
    }
    const seen = new Set<string>()
    const planned: PlannedLine[] = []
    const lineErrors: BatchError[] = []
    /** The invalid lines' results, written only once the batch is to run (a batch failing validation has no files). */
    const rejected: StoredResult[] = []
    for (const l of all) {
      const r = await checkLine(d.models, tenant, b.endpoint, l.text, seen)
      if (r.ok) {
        planned.push({ line: l.line, custom_id: r.request.custom_id, input: r.input })
        continue
      }
      if (lineErrors.length < MAX_LINE_ERRORS)
        lineErrors.push({ code: r.code, message: r.message, param: r.param, line: l.line })
      const id = requestIdOf(b.id, l.line)
      rejected.push({
        ok: false,
        line: l.line,
        result:
          r.stage === 'line'
            ? {
                id,
                custom_id: r.custom_id,
                response: null,
                error: { code: r.code, message: `line ${l.line}: ${r.message}` },
              }
            : {
                id,
                custom_id: r.custom_id,
                response: {
                  status_code: r.status,
                  request_id: id,
                  body: new ApiError(r.status, r.message, { code: r.code, param: r.param }).toJSON(),
                },
                error: null,
              },
      })
    }
    const invalid = rejected.length
    if (!planned.length) {
      // Nothing to run: fail at validation with the lines' reasons (the first MAX_LINE_ERRORS), as OpenAI does.
      ctx.logger.info({ batchId: b.id, lines: all.length }, 'batch failed validation: no valid line')
      await failBatch(tenant, b.id, lineErrors, { total: all.length, completed: 0, failed: invalid })
      return null
    }
    for (const result of rejected) await putResult(store, tenant, b.id, result)
    const chunks = Math.ceil(planned.length / perChunk)
    for (let n = 0; n < chunks; n++) {
      await putChunk(store, tenant, b.id, n, planned.slice(n * perChunk, (n + 1) * perChunk))
      if (n % 16 === 15) await ctx.heartbeat()
    }
    ctx.logger.info({ batchId: b.id, lines: all.length, invalid, chunks }, 'batch planned')
    return updateBatch(store, tenant, b.id, (cur) =>
      cur.internal.chunks !== null || isTerminalBatch(cur.status)
        ? null
        : {
            ...cur,
            status: cur.status === 'validating' ? 'in_progress' : cur.status,
            in_progress_at: cur.status === 'validating' ? now() : cur.in_progress_at,
            request_counts: { total: all.length, completed: 0, failed: invalid },
            internal: { ...cur.internal, chunks, invalid },
          },
    )
  }

  const batch: JobHandler = async (ctx) => {
    const { batchId } = inputOf(ctx)
    const tenant = ctx.job.tenant
    let b = await getBatch(store, tenant, batchId)
    if (!b) throw new PermanentError(`no batch ${batchId} for this tenant`, { code: 'batch_not_found' })
    if (isTerminalBatch(b.status)) return { batchId, status: b.status }
    if (b.internal.chunks === null) {
      if (b.status === 'cancelling') {
        const done = await finalize(tenant, batchId, ctx.logger)
        return { batchId, status: done?.status }
      }
      b = await plan(ctx, b)
      if (!b) return { batchId, status: 'failed' }
    }
    if (isTerminalBatch(b.status)) return { batchId, status: b.status }
    const chunks = b.internal.chunks ?? 0
    for (let n = 0; n < chunks; n++) if (!b.internal.done[n]) await enqueueChunk(b, n, ctx.logger)
    if (Object.keys(b.internal.done).length >= chunks) await finalize(tenant, batchId, ctx.logger)
    return { batchId, chunks }
  }

  /** Before the result is written: a crash in between re-runs the line, and the usage id dedupes. */
  async function recordUsage(b: BatchRecord, pl: PlannedLine, out: GenerationOutput): Promise<void> {
    if (!d.usage) return
    await d.usage.record({
      id: requestIdOf(b.id, pl.line),
      tenant: b.internal.tenant,
      apiKeyId: b.internal.apiKeyId ?? '',
      model: out.model,
      kind: 'batch',
      promptTokens: out.usage.promptTokens,
      completionTokens: out.usage.completionTokens,
      trainedTokens: 0,
      ...(b.internal.requestId ? { requestId: b.internal.requestId } : {}),
      cached: false,
      at: Date.now(),
    })
  }

  function resultOf(batchId: string, pl: PlannedLine, out: GenerationOutput): StoredResult {
    const id = requestIdOf(batchId, pl.line)
    const completionId = `${batchId}_${pl.line}`
    const body =
      pl.input.endpoint === 'completions' ? completionBody(completionId, out) : chatBody(completionId, out)
    return {
      ok: true,
      line: pl.line,
      result: {
        id,
        custom_id: pl.custom_id,
        response: { status_code: 200, request_id: id, body },
        error: null,
      },
    }
  }

  function failureOf(batchId: string, pl: PlannedLine, err: ApiError): StoredResult {
    const id = requestIdOf(batchId, pl.line)
    return {
      ok: false,
      line: pl.line,
      result: {
        id,
        custom_id: pl.custom_id,
        response: { status_code: err.status, request_id: id, body: err.toJSON() },
        error: null,
      },
    }
  }

  const batch_chunk: JobHandler = async (ctx) => {
    const { batchId, chunk: n } = inputOf(ctx)
    if (n === undefined) throw new PermanentError('batch_chunk input lacks chunk', { code: 'invalid_input' })
    const tenant = ctx.job.tenant
    const b = await getBatch(store, tenant, batchId)
    if (!b) throw new PermanentError(`no batch ${batchId} for this tenant`, { code: 'batch_not_found' })
    if (isTerminalBatch(b.status)) return { batchId, chunk: n, skipped: b.status }
    const planned = await getChunk(store, tenant, batchId, n)
    if (!planned) throw new PermanentError(`batch ${batchId} has no chunk ${n}`, { code: 'chunk_not_found' })
    const done = new Map<number, StoredResult>()
    for (const pl of planned) {
      const r = await getResult(store, tenant, batchId, pl.line)
      if (r) done.set(pl.line, r)
    }
    const todo = planned.filter((pl) => !done.has(pl.line))
    if (done.size)
      ctx.logger.info(
        { batchId, chunk: n, alreadyDone: done.size },
        'chunk resumed: skipping lines already done',
      )

    let stopped: 'cancelled' | 'expired' | null = null
    let checkedAt = Date.now()
    let current: BatchRecord = b
    const refresh = async () => {
      if (Date.now() - checkedAt >= pollMs) {
        checkedAt = Date.now()
        current = (await getBatch(store, tenant, batchId)) ?? current
      }
      if (current.status === 'cancelling' || current.status === 'cancelled') stopped = 'cancelled'
      else if (Date.now() >= current.expires_at * 1000) stopped = 'expired'
    }

    // One listener on the job's signal for the whole chunk (not one per line), passed on to each line's own.
    const lineCtrls = new Set<AbortController>()
    const abortLines = () => {
      for (const c of lineCtrls) c.abort(ctx.signal.reason)
    }
    ctx.signal.addEventListener('abort', abortLines, { once: true })

    const runLine = async (pl: PlannedLine): Promise<void> => {
      await lines.acquire()
      try {
        await refresh()
        if (stopped || ctx.signal.aborted) return
        let r: StoredResult
        try {
          const lineCtrl = new AbortController()
          lineCtrls.add(lineCtrl)
          try {
            const out = await d.engine.generate(pl.input, { signal: lineCtrl.signal })
            await recordUsage(current, pl, out)
            r = resultOf(batchId, pl, out)
          } finally {
            lineCtrls.delete(lineCtrl)
          }
        } catch (err) {
          if (ctx.signal.aborted) throw err
          if (err instanceof ApiError) r = failureOf(batchId, pl, err)
          else if (ctx.receiveCount >= d.maxReceiveCount) {
            ctx.logger.error(
              { err, batchId, line: pl.line },
              'batch line failed on the last delivery; recorded as failed',
            )
            r = failureOf(
              batchId,
              pl,
              new ApiError(500, 'The request failed in the worker.', { code: 'internal_error' }),
            )
          } else throw err
        }
        if (!(await putResult(store, tenant, batchId, r)))
          r = (await getResult(store, tenant, batchId, pl.line)) ?? r
        done.set(pl.line, r)
      } finally {
        lines.release()
      }
    }
    const settled = await Promise.allSettled(todo.map(runLine))
    ctx.signal.removeEventListener('abort', abortLines)
    if (ctx.signal.aborted) throw ctx.signal.reason
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
    if (failure) throw failure.reason

    const counts = await markChunkDone(tenant, batchId, n, done, ctx.logger)
    ctx.logger.info({ batchId, chunk: n, ...counts, stopped }, 'batch chunk done')
    return { batchId, chunk: n, ...counts, stopped }
  }

  /** Records chunk n as done with the outcomes of its lines; the chunk that completes the set finalizes. */
  async function markChunkDone(
    tenant: string,
    batchId: string,
    n: number,
    done: Map<number, StoredResult>,
    log?: Logger,
  ): Promise<{ completed: number; failed: number }> {
    let completed = 0
    let failed = 0
    for (const r of done.values()) r.ok ? completed++ : failed++
    const after = await updateBatch(store, tenant, batchId, (cur) => {
      if (isTerminalBatch(cur.status)) return null
      const next: BatchRecord = {
        ...cur,
        internal: { ...cur.internal, done: { ...cur.internal.done, [n]: { completed, failed } } },
      }
      next.request_counts = liveCounts(next)
      return next
    })
    if (
      after &&
      !isTerminalBatch(after.status) &&
      after.internal.chunks !== null &&
      Object.keys(after.internal.done).length >= after.internal.chunks
    )
      await finalize(tenant, batchId, log)
    return { completed, failed }
  }

  /**
   * A chunk whose message was dead-lettered (its worker died on every
   * delivery): its lines without a result fail with `batch_line_failed`, and
   * the chunk counts as done, so the batch still ends.
   */
  async function abandonChunk(tenant: string, batchId: string, n: number): Promise<void> {
    const b = await getBatch(store, tenant, batchId)
    if (!b || isTerminalBatch(b.status)) return
    const done = new Map<number, StoredResult>()
    for (const pl of (await getChunk(store, tenant, batchId, n)) ?? []) {
      let r = await getResult(store, tenant, batchId, pl.line)
      if (!r) {
        const id = requestIdOf(batchId, pl.line)
        r = {
          ok: false,
          line: pl.line,
          result: {
            id,
            custom_id: pl.custom_id,
            response: null,
            error: {
              code: 'batch_line_failed',
              message: `The worker running this request stopped on each of ${d.maxReceiveCount} deliveries.`,
            },
          },
        }
        if (!(await putResult(store, tenant, batchId, r)))
          r = (await getResult(store, tenant, batchId, pl.line)) ?? r
      }
      done.set(pl.line, r)
    }
    const counts = await markChunkDone(tenant, batchId, n, done, d.logger)
    d.logger?.warn({ batchId, chunk: n, ...counts }, 'dead-lettered batch chunk: its unfinished lines failed')
  }

  return { batch, batch_chunk, abandonChunk }
}
