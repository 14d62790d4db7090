/**
 * OpenAI's fine-tuning objects from our records: `fine_tuning.job` from a
 * `fine_tune` job record (+ the worker's status object while it runs), and the
 * request and response schemas of edge/routes/fine-tuning.ts.
 *
 * Status: the job store's `queued | running | succeeded | failed | canceled`
 * becomes OpenAI's `validating_files | queued | running | succeeded | failed |
 * cancelled`; `validating_files` while the worker checks the files.
 * Extensions: `hyperparameters.lora_rank` and `seq_len`, `webhook`, and
 * `metrics` (base and final validation loss).
 */
import { z } from '@hono/zod-openapi'
import { modelField } from '../../core/openai/schemas.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import {
  estimatedFinish,
  type FineTuneInput,
  type FineTuneStatus,
  fineTuneInputSchema,
  fineTuneOutputSchema,
} from '../../core/records/fine-tunes.js'

const auto = <T extends z.ZodTypeAny>(t: T) => z.union([z.literal('auto'), t]).optional()

export const hyperparametersRequest = z
  .object({
    n_epochs: auto(z.number().int().min(1).max(50)),
    batch_size: auto(z.number().int().min(1).max(64)),
    learning_rate_multiplier: auto(z.number().gt(0).max(100)),
    lora_rank: auto(z.number().int().min(1).max(64)).openapi({
      description: 'Extension: LoRA rank (auto: 8).',
    }),
    seq_len: auto(z.number().int().min(8).max(4096)).openapi({
      description: 'Extension: tokens per training sequence (auto: 64, at most the context).',
    }),
  })
  .openapi('FineTuningHyperparameters')
export type HyperparametersRequest = z.infer<typeof hyperparametersRequest>

export const createFineTuningBody = z
  .object({
    model: modelField,
    training_file: z.string().min(1).max(128).openapi({ example: 'file-abc123' }),
    validation_file: z.string().min(1).max(128).nullish(),
    hyperparameters: hyperparametersRequest.nullish(),
    method: z
      .object({
        type: z.literal('supervised'),
        supervised: z.object({ hyperparameters: hyperparametersRequest.nullish() }).nullish(),
      })
      .nullish()
      .openapi({ description: 'Only `supervised` (LoRA); its hyperparameters win over the top-level ones.' }),
    suffix: z
      .string()
      .min(1)
      .max(40)
      .regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only')
      .nullish(),
    seed: z.number().int().min(0).max(2_147_483_647).nullish(),
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
      .nullish(),
    integrations: z.array(z.unknown()).nullish().openapi({ description: 'Accepted and ignored.' }),
    webhook: z.string().max(2048).optional().openapi({ description: 'Extension: URL notified of the job.' }),
    webhook_events_filter: z
      .array(z.enum(['start', 'output', 'completed']))
      .max(3)
      .optional(),
  })
  .openapi('CreateFineTuningJobRequest')
export type CreateFineTuningBody = z.infer<typeof createFineTuningBody>

const hyperparameters = z.object({
  /** 'auto' until the worker has read the training file (as OpenAI shows it). */
  n_epochs: z.union([z.literal('auto'), z.number().int()]),
  batch_size: z.number().int(),
  learning_rate_multiplier: z.number(),
  lora_rank: z.number().int(),
  seq_len: z.number().int(),
})

export const fineTuningJob = z
  .object({
    object: z.literal('fine_tuning.job'),
    id: z.string(),
    model: z.string(),
    created_at: z.number().int(),
    finished_at: z.number().int().nullable(),
    fine_tuned_model: z.string().nullable(),
    organization_id: z.string(),
    result_files: z.array(z.string()),
    status: z.enum(['validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled']),
    validation_file: z.string().nullable(),
    training_file: z.string(),
    hyperparameters,
    method: z.object({ type: z.literal('supervised'), supervised: z.object({ hyperparameters }) }),
    trained_tokens: z.number().int().nullable(),
    error: z.object({ code: z.string(), message: z.string(), param: z.string().nullable() }).nullable(),
    seed: z.number().int(),
    estimated_finish: z.number().int().nullable(),
    integrations: z.array(z.unknown()).nullable(),
    metadata: z.record(z.string(), z.string()).nullable(),
    user_provided_suffix: z.string().nullable(),
    webhook: z.string().nullable(),
    metrics: z
      .object({ base_valid_loss: z.number().nullable(), valid_loss: z.number().nullable() })
      .nullable(),
  })
  .openapi('FineTuningJob')

export const fineTuningEvent = z
  .object({
    object: z.literal('fine_tuning.job.event'),
    id: z.string(),
    created_at: z.number().int(),
    level: z.enum(['info', 'warn', 'error']),
    message: z.string(),
    type: z.enum(['message', 'metrics']),
    data: z.record(z.string(), z.unknown()).nullable(),
  })
  .openapi('FineTuningJobEvent')

export const fineTuningCheckpoint = z
  .object({
    object: z.literal('fine_tuning.job.checkpoint'),
    id: z.string(),
    created_at: z.number().int(),
    fine_tuned_model_checkpoint: z.string(),
    fine_tuning_job_id: z.string(),
    step_number: z.number().int(),
    metrics: z.object({ step: z.number(), train_loss: z.number(), valid_loss: z.number().optional() }),
  })
  .openapi('FineTuningJobCheckpoint')

export type FineTuningJobView = z.infer<typeof fineTuningJob>

const secs = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000))

export function fineTuningJobView(r: JobRecord, status: FineTuneStatus | null): FineTuningJobView {
  const input: FineTuneInput = fineTuneInputSchema.parse(r.input)
  const out = r.state === 'succeeded' ? fineTuneOutputSchema.safeParse(r.output) : null
  const output = out?.success ? out.data : null
  const state =
    r.state === 'canceled'
      ? 'cancelled'
      : r.state === 'running' && status?.phase === 'validating_files'
        ? 'validating_files'
        : r.state
  const epochs = output?.n_epochs ?? status?.n_epochs
  const h = { ...input.hyperparameters, ...(epochs !== undefined ? { n_epochs: epochs } : {}) }
  return {
    object: 'fine_tuning.job',
    id: r.id,
    model: input.model,
    created_at: secs(r.createdAt)!,
    finished_at: secs(r.finishedAt),
    fine_tuned_model: output?.fine_tuned_model ?? null,
    organization_id: r.tenant,
    result_files: [],
    status: state,
    validation_file: input.validation_file,
    training_file: input.training_file,
    hyperparameters: h,
    method: { type: 'supervised', supervised: { hyperparameters: h } },
    trained_tokens: output?.trained_tokens ?? status?.trained_tokens ?? null,
    error: r.error ? { code: r.error.code, message: r.error.message, param: null } : null,
    seed: input.seed,
    estimated_finish: r.state === 'running' ? estimatedFinish(status) : null,
    integrations: null,
    metadata: r.metadata ?? null,
    user_provided_suffix: input.suffix,
    webhook: r.webhook?.url ?? null,
    metrics: output ? { base_valid_loss: output.base_valid_loss, valid_loss: output.valid_loss } : null,
  }
}
