/**
 * The `fine_tune` job handler: LoRA fine-tuning of a published model on an
 * uploaded file, on a worker, as OpenAI's fine-tuning jobs do.
 *
 *   validate files → download the base → build the LoRA train-step graph
 *   (models/train) → base validation loss → steps (an event each, a
 *   checkpoint in the ObjectStore every `checkpointEvery`) → validation loss
 *   → quality gate → publish `ft:<base>:<tenant>:<suffix>:<id>` (owner: the
 *   tenant) as an adapter folder (served beside the base), or merged

 *
 * A job whose worker dies or drains resumes from its last checkpoint (the
 * queue redelivers its message; shutdown saves one first). So does a job that
 * outlives its delivery's hold cap (SQS: 12 hours): the loop stops it before
 * the cap ('hold_expiring'), a checkpoint is saved as at a shutdown, and the
 * job is sent again to go on from it. The loop's
 * heartbeat keeps the message while training runs; the handler also beats
 * around the long synchronous parts (graph build, ONNX export). A fine-tune
 * whose validation loss is worse than the base model's on the same
 * validation windows fails with code `quality_gate` and is not published.
 *
 * When the base is one of our Llama exports (workers/generation/lora-graph.ts
 * `adapterServable`), the published folder is the adapter alone (PEFT layout
 * under `adapter/`, plus the base's config and tokenizer): workers serve it in
 * a LoRA slot of the base, so many fine-tunes share one loaded base. Any other
 * base gets the adapters merged into a complete model folder (with the PEFT
 * adapter under `adapter/` too), served as a model of its own.
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { JsonlError } from '../../core/jsonl.js'
import type { Logger } from '../../core/logger.js'
import { readManifest } from '../../core/model-manifest.js'
import { publishModelFolder } from '../../core/model-publish.js'
import type { ObjectStore } from '../../core/ports/object-store.js'
import type { UsageStore } from '../../core/ports/usage-store.js'
import { readFileText } from '../../core/records/files.js'
import {
  appendEvent,
  BASE_LEARNING_RATE,
  checkpointDirKey,
  DEFAULT_MAX_FINE_TUNE_STEPS,
  type FineTuneCheckpoint,
  type FineTuneInput,
  type FineTuneOutput,
  fineTuneInputSchema,
  listCheckpoints,
  type NewFineTuneEvent,
  plannedEpochs,
  writeCheckpointMeta,
  writeStatus,
} from '../../core/records/fine-tunes.js'
import { readModelFolder, writeModelFolder } from '../../models/folder.js'
import { readSafetensors, type Weights, writeSafetensors } from '../../models/safetensors.js'
import { createTokenizer } from '../../models/tokenizer/tokenizer.js'
import { BatchSchedule, type Dataset, makeBatch, valBatches } from '../../models/train/data.js'
import {
  ADAPTER_FILES,
  initLora,
  type LoraConfig,
  loraLrScale,
  loraParams,
  loraShapes,
  mergeLora,
  saveAdapter,
} from '../../models/train/lora.js'
import { freshState, type OptimState, TrainSession } from '../../models/train/session.js'
import { buildTrainGraphs } from '../../models/train/step-graph.js'
import { optimizerOf } from '../../models/train/train.js'
import { classify, PermanentError, toJobError } from '../errors.js'
import { ADAPTER_SERVING_MODULES, adapterServable, writeAdapterFolder } from '../generation/lora-graph.js'
import { ModelCache } from '../generation/model-cache.js'
import { JobAbortError, type JobContext, type JobHandler } from '../worker-loop.js'
import { buildDataset, parseExamples, tokenizeExamples, trainableTokensOf } from './dataset.js'

/** The linear layers that get adapters: those a served base has adapter slots on. */
export const FINE_TUNE_TARGETS: LoraConfig['targetModules'] = ADAPTER_SERVING_MODULES
const OPTIMIZER_FILE = 'optimizer.safetensors'
/** Step events per job at most (the first and last step always have one). */
const MAX_STEP_EVENTS = 500
/** The status object (trained tokens, step) is rewritten every this many steps, and at checkpoints. */
const STATUS_EVERY = 10

export interface FineTuneHandlerOptions {
  store: ObjectStore
  /** Local scratch: downloaded base models and per-job folders. */
  workDir: string
  /** Save a checkpoint every N steps (and at the end); default: about 5 per job. */
  checkpointEvery?: number
  /** onnxruntime intra-op threads; default onnxruntime's choice. */
  threads?: number
  executionProviders?: string[]
  logger?: Logger
  /** Metered usage: one record per succeeded job (kind `fine_tune`, id = the job id, so a rerun adds none). */
  usage?: UsageStore
  /** Most training steps of one job (PGPT_MAX_FINE_TUNE_STEPS); default DEFAULT_MAX_FINE_TUNE_STEPS. */
  maxSteps?: number
}

const nowS = () => Math.floor(Date.now() / 1000)

export function createFineTuneHandler(o: FineTuneHandlerOptions): JobHandler {
  const bases = new ModelCache<string>({
    store: o.store,
    dir: join(o.workDir, 'models'),
    budgetBytes: Number.MAX_SAFE_INTEGER,
    open: async (folder) => folder,
    sizeOf: () => 0,
    dispose: () => {},
    logger: o.logger,
  })
  return async function fineTune(ctx: JobContext): Promise<FineTuneOutput> {
    const event = (e: NewFineTuneEvent) =>
      appendEvent(o.store, ctx.job.id, e).catch((err) => ctx.logger.warn({ err }, 'event not stored'))
    try {
      return await runFineTune(o, bases, ctx, event)
    } catch (err) {
      if (err instanceof JobAbortError) {
        if (err.kind === 'canceled') await event({ message: 'Fine-tuning job cancelled.' })
        if (err.kind === 'shutdown')
          await event({ message: 'The worker is stopping; the job resumes from its last checkpoint.' })
        if (err.kind === 'hold_expiring')
          await event({
            message:
              'The job has run as long as one queue delivery may last; it resumes from its last checkpoint.',
          })
      } else if (classify(err) === 'permanent') {
        await event({ level: 'error', message: `Fine-tuning job failed: ${toJobError(err).message}` })
      } else {
        await event({
          level: 'warn',
          message: `Attempt ${ctx.job.attempts} failed: ${toJobError(err).message}; the job is retried unless this was its last delivery.`,
        })
      }
      throw err
    } finally {
      await rm(join(o.workDir, 'jobs', ctx.job.id), { recursive: true, force: true }).catch(() => {})
    }
  }
}

async function readExamples(store: ObjectStore, tenant: string, fileId: string, what: string) {
  const code = `invalid_${what}_file`
  const text = await readFileText(store, tenant, fileId)
  if (text === null) throw new PermanentError(`The ${what} file '${fileId}' does not exist.`, { code })
  try {
    return parseExamples(text)
  } catch (err) {
    if (err instanceof JsonlError)
      throw new PermanentError(`The ${what} file '${fileId}' is invalid: ${err.message}`, { code })
    throw err
  }
}

async function runFineTune(
  o: FineTuneHandlerOptions,
  bases: ModelCache<string>,
  ctx: JobContext,
  event: (e: NewFineTuneEvent) => Promise<unknown>,
): Promise<FineTuneOutput> {
  const { store } = o
  const { job, signal } = ctx
  const input: FineTuneInput = fineTuneInputSchema.parse(job.input)
  const h = input.hyperparameters
  const checkAbort = () => {
    if (signal.aborted) throw signal.reason
  }

  // ---- validate files, fetch the base ----
  await writeStatus(store, job.id, {
    phase: 'validating_files',
    step: 0,
    total_steps: null,
    trained_tokens: 0,
  })
  await event({ message: `Validating training file: ${input.training_file}` })
  const trainExamples = await readExamples(store, job.tenant, input.training_file, 'training')
  const valExamples = input.validation_file
    ? await readExamples(store, job.tenant, input.validation_file, 'validation')
    : null
  const manifest = await readManifest(store, input.model)
  if (!manifest || (manifest.owner !== null && manifest.owner !== job.tenant))
    throw new PermanentError(`The model '${input.model}' does not exist.`, { code: 'model_not_found' })
  const lease = await bases.acquire(input.model)
  try {
    checkAbort()
    const base = await readModelFolder(lease.model)
    if (!base.tokenizer)
      throw new PermanentError(`The model '${input.model}' has no tokenizer.`, {
        code: 'model_not_supported',
      })
    const tok = createTokenizer(base.tokenizer)
    const c = base.config
    // What generation stops on (generation_config's eos ids, config's, the tokenizer's: as the
    // generation worker reads them): a chat's assistant turn is trained through the first of them.
    const stopIds = [
      ...new Set([...[base.generationConfig?.eos_token_id ?? []].flat(), c.eosTokenId, tok.eosTokenId]),
    ]
    const trainDocs = tokenizeExamples(tok, trainExamples, stopIds)
    let data: Dataset
    try {
      data = buildDataset(trainDocs, valExamples ? tokenizeExamples(tok, valExamples, stopIds) : null, {
        eos: tok.eosTokenId,
        pad: tok.padTokenId,
        maxSeqLen: Math.min(h.seq_len, c.maxPositions),
        seed: input.seed,
      })
    } catch (err) {
      throw new PermanentError((err as Error).message, { code: 'invalid_training_file' })
    }
    // Rows as long as the longest example needs, at most seq_len.
    const seqLen = data.seqLen
    const batch = h.batch_size
    // 'auto' epochs are lowered to fit PGPT_MAX_FINE_TUNE_STEPS; beyond it even so, the job fails (the edge refuses most such jobs at creation).
    const maxSteps = o.maxSteps ?? DEFAULT_MAX_FINE_TUNE_STEPS
    const { epochs, steps, ok } = plannedEpochs(
      h.n_epochs,
      trainExamples.length,
      data.trainWindows.length,
      batch,
      maxSteps,
    )
    if (!ok)
      throw new PermanentError(
        `The job would run ${steps} training steps (${epochs} epochs of ${data.trainWindows.length} rows, ${batch} a step), beyond the limit of ${maxSteps} (PGPT_MAX_FINE_TUNE_STEPS); use fewer epochs, a larger batch_size or a smaller file.`,
        { code: 'too_many_steps' },
      )
    const every = o.checkpointEvery ?? Math.max(1, Math.ceil(steps / 5))
    await event({
      message: `Files validated: ${trainExamples.length} training examples${valExamples ? `, ${valExamples.length} validation examples` : ''}; ${epochs} epochs, ${steps} steps of ${batch} × ${seqLen} tokens.`,
      data: {
        n_epochs: epochs,
        training_examples: trainExamples.length,
        validation_examples: valExamples?.length ?? null,
        train_windows: data.trainWindows.length,
        valid_windows: data.valWindows.length,
        total_steps: steps,
      },
    })

    // ---- the LoRA train-step graph and the optimizer state (fresh or from the last checkpoint) ----
    const lora: LoraConfig = {
      rank: h.lora_rank,
      alpha: 2 * h.lora_rank,
      targetModules: FINE_TUNE_TARGETS,
      trainableTokens: trainableTokensOf(trainDocs),
    }
    const last = (await listCheckpoints(store, job.id)).filter((k) => k.step_number <= steps).at(-1)
    let state: OptimState
    let trainedTokens = 0
    let baseValLoss: number | null = null
    if (last) {
      state = await loadCheckpointState(store, job.id, last.step_number)
      trainedTokens = last.trained_tokens
      baseValLoss = last.base_valid_loss
      await event({ message: `Resuming from the checkpoint at step ${last.step_number}.` })
    } else state = freshState(initLora(c, base.weights, lora, input.seed))
    await ctx.heartbeat()
    const graphs = await buildTrainGraphs({
      config: c,
      batch,
      seqLen,
      trainable: loraShapes(c, base.weights, lora),
      frozen: base.weights,
      params: loraParams(c, lora),
      decay: () => true,
      lrScale: loraLrScale,
      optimizer: optimizerOf(
        {
          batchSize: batch,
          seqLen,
          steps,
          lr: BASE_LEARNING_RATE * h.learning_rate_multiplier,
          seed: input.seed,
        },
        0,
      ),
    })
    await ctx.heartbeat()
    checkAbort()
    const session = await TrainSession.create(graphs, c, batch, seqLen, state, {
      threads: o.threads,
      executionProviders: o.executionProviders,
    })
    try {
      const validate = async () => (await session.evaluate(valBatches(data, batch))).loss
      await writeStatus(store, job.id, {
        phase: 'running',
        step: session.stepsDone,
        total_steps: steps,
        trained_tokens: trainedTokens,
        n_epochs: epochs,
      })
      if (baseValLoss === null) {
        // B = 0: the session starts as the base model exactly.
        baseValLoss = session.stepsDone === 0 ? await validate() : null
        await event({
          type: 'metrics',
          message: `Base model validation loss: ${baseValLoss?.toFixed(4)}`,
          data: { step: 0, valid_loss: baseValLoss },
        })
      }
      if (session.stepsDone === 0) await event({ message: 'Fine-tuning job started.' })

      const checkpoint = async (trainLoss: number, validLoss?: number) => {
        const s = session.state()
        const dir = checkpointDirKey(job.id, s.step)
        const local = join(o.workDir, 'jobs', job.id, 'checkpoint')
        await saveAdapter(local, s.params, lora, input.model)
        for (const f of [ADAPTER_FILES.weights, ADAPTER_FILES.config]) {
          await store.put(dir + f, new Uint8Array(await readFile(join(local, f))))
        }
        const moments: Weights = new Map()
        for (const [n, t] of s.m) moments.set(`m.${n}`, t)
        for (const [n, t] of s.v) moments.set(`v.${n}`, t)
        await store.put(
          dir + OPTIMIZER_FILE,
          writeSafetensors(moments, { metadata: { step: String(s.step) } }),
        )
        const meta: FineTuneCheckpoint = {
          object: 'fine_tuning.job.checkpoint',
          id: `ftckpt-${job.id.replace(/^ftjob[-_]/, '')}-${s.step}`,
          created_at: nowS(),
          fine_tuned_model_checkpoint: `${input.fine_tuned_model}:ckpt-step-${s.step}`,
          fine_tuning_job_id: job.id,
          step_number: s.step,
          metrics: {
            step: s.step,
            train_loss: trainLoss,
            ...(validLoss !== undefined ? { valid_loss: validLoss } : {}),
          },
          trained_tokens: trainedTokens,
          base_valid_loss: baseValLoss,
        }
        await writeCheckpointMeta(store, job.id, meta)
        await event({
          message: `Checkpoint created at step ${s.step}.`,
          data: { step: s.step, checkpoint: meta.id },
        })
      }

      // ---- the steps ----
      const schedule = new BatchSchedule(data.trainWindows, batch, input.seed)
      // A step event each step, at most MAX_STEP_EVENTS of them (long jobs log every k-th step).
      const logEvery = Math.max(1, Math.ceil(steps / MAX_STEP_EVENTS))
      const run = { run_started_at: nowS(), run_start_step: session.stepsDone }
      let trainLoss = Number.NaN
      while (session.stepsDone < steps) {
        if (signal.aborted) {
          if ((signal.reason as JobAbortError).resumes && session.stepsDone > (last?.step_number ?? 0))
            await checkpoint(trainLoss)
          throw signal.reason
        }
        const r = await session.run(makeBatch(data, schedule.starts(session.stepsDone)))
        trainLoss = r.loss
        trainedTokens += batch * seqLen
        if (!Number.isFinite(r.loss))
          throw new PermanentError(`Training diverged: the loss is ${r.loss} at step ${r.step}.`, {
            code: 'training_diverged',
          })
        if (r.step % logEvery === 0 || r.step === 1 || r.step === steps)
          await event({
            type: 'metrics',
            message: `Step ${r.step}/${steps}: training loss=${r.loss.toFixed(4)}`,
            data: { step: r.step, total_steps: steps, train_loss: r.loss, learning_rate: r.lr },
          })
        await ctx.publish('progress', { step: r.step, total_steps: steps, train_loss: r.loss })
        if (r.step % every === 0 && r.step < steps) await checkpoint(r.loss, await validate())
        if (r.step % every === 0 || r.step % STATUS_EVERY === 0)
          await writeStatus(store, job.id, {
            phase: 'running',
            step: r.step,
            total_steps: steps,
            trained_tokens: trainedTokens,
            n_epochs: epochs,
            ...run,
          })
      }

      // ---- validation, the quality gate, the published model (adapter, or merged) ----
      const validLoss = await validate()
      await event({
        type: 'metrics',
        message: `Validation loss: ${validLoss.toFixed(4)} (base model: ${baseValLoss?.toFixed(4) ?? 'n/a'})`,
        data: { step: session.stepsDone, valid_loss: validLoss, base_valid_loss: baseValLoss },
      })
      if (last?.step_number !== session.stepsDone) await checkpoint(trainLoss, validLoss)
      if (!Number.isFinite(validLoss) || (baseValLoss !== null && validLoss > baseValLoss))
        throw new PermanentError(
          `The fine-tuned model's validation loss (${validLoss.toFixed(4)}) is worse than the base model's (${baseValLoss?.toFixed(4)}) on the same validation data; it was not published.`,
          { code: 'quality_gate' },
        )
      checkAbort()
      const adapters = session.state().params
      const modelDir = join(o.workDir, 'jobs', job.id, 'model')
      await ctx.heartbeat()
      const asAdapter = await adapterServable(lease.model)
      const description = `LoRA fine-tune (rank ${lora.rank}${asAdapter ? ', served beside its base' : ', merged'}) of ${input.model}: ${session.stepsDone} steps; validation loss ${validLoss.toFixed(4)} (base ${baseValLoss?.toFixed(4)}).`
      if (asAdapter)
        await writeAdapterFolder(modelDir, {
          baseFolder: lease.model,
          baseModel: input.model,
          adapters,
          lora,
          card: `# ${input.fine_tuned_model}\n\n${description}\n`,
        })
      else {
        await writeModelFolder(modelDir, {
          config: c,
          weights: mergeLora(c, base.weights, adapters, lora),
          tokenizer: base.tokenizer,
          generationConfig: base.generationConfig,
          card: { name: input.fine_tuned_model, description },
        })
        await saveAdapter(join(modelDir, 'adapter'), adapters, lora, input.model)
      }
      await ctx.heartbeat()
      checkAbort()
      await publishModelFolder(store, modelDir, {
        id: input.fine_tuned_model,
        owner: job.tenant,
        contextLength: manifest.context_length,
        source: 'fine-tune',
        baseModel: input.model,
      })
      await writeStatus(store, job.id, {
        phase: 'running',
        step: session.stepsDone,
        total_steps: steps,
        trained_tokens: trainedTokens,
        n_epochs: epochs,
      })
      await event({ message: `New fine-tuned model created: ${input.fine_tuned_model}` })
      await o.usage?.record({
        id: `usage_${job.id}`,
        tenant: job.tenant,
        apiKeyId: job.apiKeyId ?? '',
        model: input.fine_tuned_model,
        kind: 'fine_tune',
        promptTokens: 0,
        completionTokens: 0,
        trainedTokens,
        ...(job.requestId ? { requestId: job.requestId } : {}),
        cached: false,
        at: Date.now(),
      })
      await event({ message: 'The job has successfully completed.' })
      return {
        fine_tuned_model: input.fine_tuned_model,
        trained_tokens: trainedTokens,
        steps: session.stepsDone,
        base_valid_loss: baseValLoss,
        valid_loss: validLoss,
        n_epochs: epochs,
      }
    } finally {
      await session.release()
    }
  } finally {
    lease.release()
  }
}

async function loadCheckpointState(store: ObjectStore, jobId: string, step: number): Promise<OptimState> {
  const dir = checkpointDirKey(jobId, step)
  const [params, opt] = await Promise.all([
    store.get(dir + ADAPTER_FILES.weights),
    store.get(dir + OPTIMIZER_FILE),
  ])
  if (!params || !opt) throw new Error(`checkpoint at step ${step} is incomplete`)
  const m: Weights = new Map()
  const v: Weights = new Map()
  for (const [n, t] of readSafetensors(opt).tensors) (n.startsWith('m.') ? m : v).set(n.slice(2), t)
  return { step, params: readSafetensors(params).tensors, m, v }
}
