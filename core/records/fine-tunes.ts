/**
 * What a fine-tuning job keeps, shared by the edge routes
 * (edge/routes/fine-tuning.ts) and the `fine_tune` worker handler: the job
 * input (the job record's `input`, validated on both sides), the model name of
 * the result, and the job's objects in the ObjectStore:
 *
 *   fine-tuning/<jobId>/status.json                  phase, step, trained tokens (worker-written)
 *   fine-tuning/<jobId>/events/<eventId>.json        one object per event, ids sort by time
 *   fine-tuning/<jobId>/checkpoints/<step>/…         adapter, optimizer state, checkpoint.json last
 *
 * Runtime-neutral (zod and the ObjectStore port only): the edge runs on
 * Workers and Lambda too. Events follow OpenAI's `fine_tuning.job.event`;
 * checkpoints its `fine_tuning.job.checkpoint`.
 */
import { z } from 'zod'
import type { ObjectStore } from '../ports/object-store.js'

export const FINE_TUNE_KIND = 'fine_tune'

/**
 * Hyper-parameters, 'auto' replaced by the edge except `n_epochs`: its auto
 * value depends on the training file's size, which the worker resolves
 * (`autoEpochs`) and reports in the job's status and output.
 */
export const hyperparametersSchema = z.object({
  n_epochs: z.union([z.literal('auto'), z.number().int().min(1).max(50)]),
  batch_size: z.number().int().min(1).max(64),
  /** Multiplies BASE_LEARNING_RATE. */
  learning_rate_multiplier: z.number().gt(0).max(100),
  /** Extension: rank of the LoRA update; alpha is twice the rank. */
  lora_rank: z.number().int().min(1).max(64),
  /**
   * Extension: the longest training sequence in tokens (capped by the model's
   * context); sequences are as long as the longest example needs, up to this.
   */
  seq_len: z.number().int().min(8).max(4096),
})
export type FineTuneHyperparameters = z.infer<typeof hyperparametersSchema>

/** The defaults (workers/fine-tuning/README.md says why). */
export const AUTO_HYPERPARAMETERS: FineTuneHyperparameters = {
  n_epochs: 'auto',
  batch_size: 4,
  learning_rate_multiplier: 1,
  lora_rank: 8,
  seq_len: 1024,
}
/** Peak learning rate at multiplier 1 (LoRA adapters, AdamW, warmup + cosine). */
export const BASE_LEARNING_RATE = 1e-2

/**
 * `n_epochs: 'auto'` for `examples` training examples, as OpenAI's auto
 * scales epochs with the file's size: 3 epochs, but at least
 * AUTO_MIN_EXAMPLES_SEEN examples in all (small files get more epochs, at
 * most 25) and at most 25,000 (large files get fewer, at least 1). Our
 * minimum is higher than OpenAI's 100: a small base learns a small FAQ's
 * facts only after ~2,000 examples (measured on prometheus-mini: 200
 * chat lines answer unseen phrasings after 8–10 epochs, not after 3–5).
 */
export function autoEpochs(examples: number): number {
  const n = Math.max(1, examples)
  if (3 * n < AUTO_MIN_EXAMPLES_SEEN) return Math.min(25, Math.ceil(AUTO_MIN_EXAMPLES_SEEN / n))
  if (3 * n > 25_000) return Math.max(1, Math.floor(25_000 / n))
  return 3
}
export const AUTO_MIN_EXAMPLES_SEEN = 2000

/** Default cap on one job's training steps (PGPT_MAX_FINE_TUNE_STEPS): each step holds a worker for seconds. */
export const DEFAULT_MAX_FINE_TUNE_STEPS = 50_000

/** Steps of `epochs` passes over `rows` training rows, `batch` rows a step (at least 1). */
export const fineTuneSteps = (epochs: number, rows: number, batch: number) =>
  Math.max(1, Math.ceil((epochs * rows) / batch))

/**
 * The epochs and steps a job runs, kept within `maxSteps`: `n_epochs: 'auto'`
 * (autoEpochs of `examples`) is lowered until its steps fit (at least 1 epoch);
 * a number is kept. `ok` is false when the steps still exceed the cap (a given
 * n_epochs, or one epoch of a file too large): the job is refused.
 */
export function plannedEpochs(
  nEpochs: number | 'auto',
  examples: number,
  rows: number,
  batch: number,
  maxSteps: number,
): { epochs: number; steps: number; ok: boolean } {
  let epochs = nEpochs === 'auto' ? autoEpochs(examples) : nEpochs
  if (nEpochs === 'auto')
    epochs = Math.max(1, Math.min(epochs, Math.floor((maxSteps * batch) / Math.max(1, rows))))
  const steps = fineTuneSteps(epochs, rows, batch)
  return { epochs, steps, ok: steps <= maxSteps }
}

/** Input of a `fine_tune` job. */
export const fineTuneInputSchema = z.object({
  model: z.string().min(1),
  training_file: z.string().min(1),
  validation_file: z.string().min(1).nullable(),
  hyperparameters: hyperparametersSchema,
  suffix: z.string().nullable(),
  seed: z.number().int(),
  /** The name the result is published under (fixed at creation). */
  fine_tuned_model: z.string().min(1),
})
export type FineTuneInput = z.infer<typeof fineTuneInputSchema>

/** Output of a succeeded `fine_tune` job. */
export const fineTuneOutputSchema = z.object({
  fine_tuned_model: z.string(),
  trained_tokens: z.number().int(),
  steps: z.number().int(),
  base_valid_loss: z.number().nullable(),
  valid_loss: z.number().nullable(),
  /** The epochs it ran ('auto' resolved); absent in outputs of older workers. */
  n_epochs: z.number().int().optional(),
})
export type FineTuneOutput = z.infer<typeof fineTuneOutputSchema>

const clean = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '-')

/** `ft:<base>:<tenant>:<suffix>:<short id>`, as OpenAI names fine-tunes; within the model id limit (128). */
export function fineTunedModelName(
  base: string,
  tenant: string,
  suffix: string | null,
  jobId: string,
): string {
  const short = jobId.replace(/^ftjob[-_]/, '').slice(-12)
  const name = `ft:${base}:${clean(tenant).slice(0, 32)}:${clean(suffix ?? '')}:${short}`
  return name.slice(0, 128)
}

export const jobPrefix = (jobId: string) => `fine-tuning/${jobId}/`
const statusKey = (jobId: string) => `${jobPrefix(jobId)}status.json`
const eventsPrefix = (jobId: string) => `${jobPrefix(jobId)}events/`
export const checkpointsPrefix = (jobId: string) => `${jobPrefix(jobId)}checkpoints/`
export const checkpointDirKey = (jobId: string, step: number) =>
  `${checkpointsPrefix(jobId)}${String(step).padStart(8, '0')}/`

const enc = new TextEncoder()
const dec = new TextDecoder()
const readJson = async <T>(store: ObjectStore, key: string): Promise<T | null> => {
  const b = await store.get(key)
  return b ? (JSON.parse(dec.decode(b)) as T) : null
}
const putJson = (store: ObjectStore, key: string, value: unknown, ifNoneMatch?: '*') =>
  store.put(key, enc.encode(JSON.stringify(value)), {
    contentType: 'application/json',
    ...(ifNoneMatch ? { ifNoneMatch } : {}),
  })

async function listAll(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let cursor: string | undefined
  do {
    const page = await store.list(prefix, { cursor })
    for (const o of page.objects) keys.push(o.key)
    cursor = page.cursor
  } while (cursor)
  return keys.sort()
}

// ---- status ----

export interface FineTuneStatus {
  phase: 'validating_files' | 'running'
  step: number
  total_steps: number | null
  trained_tokens: number
  /** The epochs the job runs ('auto' resolved), once the files are read. */
  n_epochs?: number
  /** When this run (attempt) began training and from which step: the rate behind estimated_finish. */
  run_started_at?: number
  run_start_step?: number
  /** Epoch seconds. */
  updated_at: number
}

/** Epoch seconds when the job should finish at this run's pace, or null before a step is done. */
export function estimatedFinish(s: FineTuneStatus | null): number | null {
  if (s?.phase !== 'running' || s.total_steps === null) return null
  if (s.run_started_at === undefined || s.run_start_step === undefined || s.step <= s.run_start_step)
    return null
  const perStep = (s.updated_at - s.run_started_at) / (s.step - s.run_start_step)
  return Math.round(s.updated_at + perStep * (s.total_steps - s.step))
}

export const readStatus = (store: ObjectStore, jobId: string) =>
  readJson<FineTuneStatus>(store, statusKey(jobId))

export const writeStatus = (store: ObjectStore, jobId: string, s: Omit<FineTuneStatus, 'updated_at'>) =>
  putJson(store, statusKey(jobId), { ...s, updated_at: Math.floor(Date.now() / 1000) })

// ---- events ----

export interface FineTuneEvent {
  object: 'fine_tuning.job.event'
  id: string
  /** Epoch seconds. */
  created_at: number
  level: 'info' | 'warn' | 'error'
  message: string
  type: 'message' | 'metrics'
  data: Record<string, unknown> | null
}

let lastMs = 0
let counter = 0
/** Time-ordered: 10 base-36 chars of ms, then a per-process counter, then 4 random chars. */
function eventId(): string {
  const now = Date.now()
  if (now > lastMs) {
    lastMs = now
    counter = 0
  } else counter++
  const rand = Math.floor(Math.random() * 36 ** 4)
    .toString(36)
    .padStart(4, '0')
  return `ftevent-${lastMs.toString(36).padStart(10, '0')}${counter.toString(36).padStart(3, '0')}${rand}`
}

export type NewFineTuneEvent = Pick<FineTuneEvent, 'message'> &
  Partial<Pick<FineTuneEvent, 'level' | 'type' | 'data'>>

/** Stores one event durably (create-once) and returns it. */
export async function appendEvent(
  store: ObjectStore,
  jobId: string,
  e: NewFineTuneEvent,
): Promise<FineTuneEvent> {
  const event: FineTuneEvent = {
    object: 'fine_tuning.job.event',
    id: eventId(),
    created_at: Math.floor(Date.now() / 1000),
    level: e.level ?? 'info',
    message: e.message,
    type: e.type ?? 'message',
    data: e.data ?? null,
  }
  await putJson(store, `${eventsPrefix(jobId)}${event.id}.json`, event, '*')
  return event
}

export interface EventPage {
  data: FineTuneEvent[]
  hasMore: boolean
}

/** Newest first, as OpenAI lists them; `after` is the id of the last event of the previous page. */
export async function listEvents(
  store: ObjectStore,
  jobId: string,
  o: { after?: string; limit: number },
): Promise<EventPage> {
  const keys = (await listAll(store, eventsPrefix(jobId))).reverse()
  let start = 0
  if (o.after) {
    const key = `${eventsPrefix(jobId)}${o.after}.json`
    // Keys sort by time: the page starts at the first key older than the cursor's.
    start = keys.findIndex((k) => k < key)
    if (start < 0) start = keys.length
  }
  const slice = keys.slice(start, start + o.limit)
  const data: FineTuneEvent[] = []
  for (const k of slice) {
    const e = await readJson<FineTuneEvent>(store, k)
    if (e) data.push(e)
  }
  return { data, hasMore: start + o.limit < keys.length }
}

// ---- checkpoints ----

export const CHECKPOINT_META = 'checkpoint.json'

export interface FineTuneCheckpoint {
  object: 'fine_tuning.job.checkpoint'
  id: string
  created_at: number
  fine_tuned_model_checkpoint: string
  fine_tuning_job_id: string
  step_number: number
  metrics: { step: number; train_loss: number; valid_loss?: number }
  /** Extensions, used to resume. */
  trained_tokens: number
  base_valid_loss: number | null
}

/** Complete checkpoints (those whose checkpoint.json exists), by ascending step. */
export async function listCheckpoints(store: ObjectStore, jobId: string): Promise<FineTuneCheckpoint[]> {
  const keys = (await listAll(store, checkpointsPrefix(jobId))).filter((k) =>
    k.endsWith(`/${CHECKPOINT_META}`),
  )
  const out: FineTuneCheckpoint[] = []
  for (const k of keys) {
    const c = await readJson<FineTuneCheckpoint>(store, k)
    if (c) out.push(c)
  }
  return out.sort((a, b) => a.step_number - b.step_number)
}

export const writeCheckpointMeta = (store: ObjectStore, jobId: string, c: FineTuneCheckpoint) =>
  putJson(store, `${checkpointDirKey(jobId, c.step_number)}${CHECKPOINT_META}`, c)
