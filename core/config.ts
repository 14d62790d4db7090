/**
 * Typed configuration. Every setting is an environment variable (the names
 * below are the contract documented in docs/deploy.md); an optional JSON file
 * (PGPT_CONFIG_FILE) may set the same names, and the environment wins.
 * A bad value is a startup error that names the variable and the rule.
 *
 * This module is runtime-neutral (it runs on Workers too): it parses a plain
 * record. `config-node.ts` reads process.env and the file.
 */
import { z } from 'zod'

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes')
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max)
const providers = z
  .string()
  .transform((s) =>
    s
      .split(',')
      .map((p) => p.trim().toLowerCase())
      .filter(Boolean),
  )
  .pipe(z.array(z.enum(['tensorrt', 'cuda', 'cpu'])).min(1))

export const configSchema = z.object({
  /** Which set of adapters to wire: the embedded default or a cloud one. */
  PGPT_PROFILE: z.enum(['local', 'cloudflare', 'aws', 'onprem']).default('local'),
  /** 0 picks a free port (printed at start). */
  PORT: int(0, 65535).default(8787),
  HOST: z.string().min(1).default('127.0.0.1'),
  /** Local profile: where the queue, store, job records and keys live. */
  PGPT_DATA_DIR: z.string().min(1).default('./.pgpt'),
  /** When set, registered at boot as an admin key of tenant `default`. */
  PGPT_API_KEY: z
    .string()
    .regex(
      /^pgpt_[A-Za-z0-9_-]{16,}$/,
      'must look like pgpt_ followed by at least 16 letters, digits, _ or -',
    )
    .optional(),
  PGPT_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

  PGPT_QUEUE: z.enum(['local', 'sqs']).default('local'),
  PGPT_SQS_QUEUE_URL: z.url().optional(),
  PGPT_SQS_DLQ_URL: z.url().optional(),
  /** Custom SQS endpoint (ElasticMQ, local-aws-sqs). */
  PGPT_SQS_ENDPOINT: z.url().optional(),
  AWS_REGION: z.string().min(1).default('us-east-1'),

  PGPT_STORE: z.enum(['fs', 's3']).default('fs'),
  PGPT_S3_BUCKET: z.string().min(3).optional(),
  /** Custom S3 endpoint (MinIO, R2, s3rver). */
  PGPT_S3_ENDPOINT: z.url().optional(),
  PGPT_S3_FORCE_PATH_STYLE: bool.default(false),

  /** Worker processes that `npm start` runs beside the edge (0: edge only). */
  PGPT_WORKERS: int(0, 64).default(1),
  /** Jobs one worker runs at once. */
  PGPT_WORKER_CONCURRENCY: int(1, 256).default(4),
  /** Seconds a received job stays invisible before another worker may take it. */
  PGPT_VISIBILITY_TIMEOUT_S: int(5, 43200).default(60),
  /** Deliveries before a message is dead-lettered. */
  PGPT_MAX_RECEIVE_COUNT: int(1, 1000).default(5),
  /** Seconds a worker waits for in-flight jobs on SIGTERM before releasing them. */
  PGPT_SHUTDOWN_GRACE_S: int(0, 3600).default(25),
  /** onnxruntime execution providers in order of preference. */
  PGPT_EXECUTION_PROVIDERS: providers.default(['cpu']),
  /**
   * Which graph workers run for our own models: 'serving' (fused opset-23
   * attention, built at load) or 'folder' (the exported graph as published).
   */
  PGPT_ENGINE_GRAPH: z.enum(['serving', 'folder']).default('serving'),
  /** LoRA adapter slots per base model, the base's slot 0 included; 0 or 1: fine-tunes are served merged. */
  PGPT_LORA_SLOTS: int(0, 256).default(8),
  PGPT_MODEL_CACHE_DIR: z.string().min(1).optional(),
  /** Memory budget for loaded models, in MiB. */
  PGPT_MODEL_CACHE_MB: int(16).default(4096),
  /**
   * The model GET /ready waits for (it must be listed to every tenant) and `npm start`'s example
   * uses. Default: prometheus-mini in the local profile (npm start and `pgpt serve` publish it);
   * elsewhere unset, and /ready waits for any model to be published.
   */
  PGPT_DEFAULT_MODEL: z.string().min(1).optional(),

  /** Edge URL that workers push events to (separate-process workers). */
  PGPT_EDGE_URL: z.url().optional(),
  /** Shared secret of the worker→edge channel. */
  PGPT_INTERNAL_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),

  /**
   * Allow webhooks to loopback/private addresses. Only in the local profile, where it is the
   * default (a development stack's receiver runs on the same machine or network); false there refuses them.
   */
  PGPT_WEBHOOK_ALLOW_PRIVATE: bool.optional(),
  PGPT_WEBHOOK_TIMEOUT_MS: int(100, 120000).default(10000),

  /** Bearer token for /metrics; when unset /metrics is open. */
  PGPT_METRICS_TOKEN: z.string().min(8).optional(),

  PGPT_RATE_LIMIT_RPM: int(1).default(600),
  PGPT_RATE_LIMIT_TPM: int(1).default(1_000_000),
  /**
   * Requests without a valid API key (401s) per minute per client address, on Node (the
   * socket's peer; edge/middleware/rate-limit unauthenticatedLimit); beyond it 429 before the
   * key is looked up. 0: no limit.
   */
  PGPT_RATE_LIMIT_UNAUTH_RPM: int(0).default(60),
  PGPT_CACHE_TTL_S: int(0).default(3600),
  /*
   * Retention (core/retention.ts; docs/operations.md "Retention"); 0 keeps for ever. A file's
   * expiry is written into its record when it is made, so a change applies to new files.
   */
  /** Days an uploaded `batch` file, and a batch's output and error files, live unless the request says (OpenAI: 30). */
  PGPT_BATCH_FILE_RETENTION_DAYS: int(0, 3650).default(30),
  /** Days an uploaded `fine-tune` file lives unless the upload sets `expires_after` (OpenAI keeps them: 0). */
  PGPT_FINE_TUNE_FILE_RETENTION_DAYS: int(0, 3650).default(0),
  /** Days a finished job's record (and the output in it) is kept; fine-tuning jobs are kept. */
  PGPT_JOB_RETENTION_DAYS: int(0, 3650).default(30),
  /** Seconds between the retention sweeps of the edge on Node (`npm start`, compose); 0: it does not sweep. */
  PGPT_CLEANUP_INTERVAL_S: int(0, 7 * 86400).default(3600),
  /** Largest JSON request body; uploads have their own limits below. */
  PGPT_MAX_BODY_BYTES: int(1024).default(1_048_576),
  /**
   * Largest body of POST /internal/events (worker → edge job events), bytes; the workers'
   * HttpEvents split their POSTs under it, so set the same value on both. A big job's
   * `completed` event (n=16 with top_logprobs) is megabytes, above PGPT_MAX_BODY_BYTES.
   */
  PGPT_MAX_INTERNAL_BODY_BYTES: int(1024).default(16 * 1_048_576),
  /** Largest file upload (POST /v1/files), bytes. */
  PGPT_MAX_FILE_BYTES: int(1024).default(100 * 1_048_576),
  /** Largest model folder upload (POST /v1/admin/models), bytes; uploads are held in memory. */
  PGPT_MAX_MODEL_UPLOAD_BYTES: int(1024).default(512 * 1_048_576),
  /**
   * Most requests (lines) in one batch, as OpenAI's 50,000: a `batch` upload with more is a 400,
   * and a batch whose input file has more fails validation (`too_many_lines`).
   */
  PGPT_MAX_BATCH_LINES: int(1).default(50_000),
  /**
   * Per-tenant storage caps of the Files API: stored files (every purpose, batch outputs included)
   * and their total bytes. An upload beyond either is a 400 `storage_limit_exceeded` naming it.
   */
  PGPT_MAX_FILES_PER_TENANT: int(1).default(10_000),
  PGPT_MAX_STORAGE_BYTES_PER_TENANT: int(1024).default(10 * 1024 * 1_048_576),
  /**
   * Most training steps of one fine-tuning job (epochs × training examples / batch_size): a job
   * beyond it is a 400 at creation; `n_epochs: 'auto'` is lowered by the worker to fit.
   */
  PGPT_MAX_FINE_TUNE_STEPS: int(1).default(50_000),
  /**
   * Enqueued-token limit of batches per tenant (OpenAI's batch queue limit): the estimated
   * tokens (prompts + max_tokens × n) of a tenant's unfinished batches together; a batch
   * beyond it is a 429 `batch_token_limit_exceeded`. Default 20 × PGPT_RATE_LIMIT_TPM's default.
   */
  PGPT_BATCH_QUEUE_TOKENS: int(1).default(20_000_000),
  /**
   * Most fine-tuning jobs a tenant has queued or running at once; another is a 429
   * `fine_tune_limit_exceeded`. Each job's work is bounded by PGPT_MAX_FINE_TUNE_STEPS.
   */
  PGPT_MAX_ACTIVE_FINE_TUNES: int(1).default(3),
  /**
   * Where job records, API keys and usage live: `sqlite` (a file in PGPT_DATA_DIR, one host)
   * or `object` (the ObjectStore of PGPT_STORE, shared by every edge and worker; needs
   * conditional writes: S3, R2, MinIO, or the fs store).
   */
  PGPT_RECORDS: z.enum(['sqlite', 'object']).default('sqlite'),
  /**
   * Key from which each tenant's `whsec_` webhook secret is derived
   * (core/webhook-secrets.ts): the workers sign with it, the edge shows the
   * secret. Local profile: a key file in PGPT_DATA_DIR when unset.
   */
  PGPT_WEBHOOK_SIGNING_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
})

type ParsedConfig = z.infer<typeof configSchema>
/** The settings with the profile-dependent defaults applied (see parseConfig). */
export type Config = Omit<ParsedConfig, 'PGPT_WEBHOOK_ALLOW_PRIVATE'> & {
  PGPT_WEBHOOK_ALLOW_PRIVATE: boolean
}
export type ConfigSource = Record<string, string | undefined>

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  constructor(readonly issues: Array<{ variable: string; message: string }>) {
    super(`Invalid configuration:\n${issues.map((i) => `  ${i.variable}: ${i.message}`).join('\n')}`)
  }
}

/** Parse settings from a plain record (env wins over file). Unknown names are ignored. */
export function parseConfig(env: ConfigSource, file: ConfigSource = {}): Config {
  const merged: ConfigSource = {}
  for (const key of Object.keys(configSchema.shape)) {
    const value = env[key] ?? file[key]
    // An empty variable counts as unset, as shells make unsetting awkward.
    if (value !== undefined && value !== '') merged[key] = String(value)
  }
  const result = configSchema.safeParse(merged)
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const variable = String(issue.path[0] ?? '(config)')
        const got = merged[variable]
        return { variable, message: got === undefined ? issue.message : `${issue.message} (got '${got}')` }
      }),
    )
  }
  const parsed = result.data
  crossCheck(parsed)
  const local = parsed.PGPT_PROFILE === 'local'
  // Defaults that depend on the profile: the local profile is for development.
  return {
    ...parsed,
    PGPT_WEBHOOK_ALLOW_PRIVATE: parsed.PGPT_WEBHOOK_ALLOW_PRIVATE ?? local,
    ...(parsed.PGPT_DEFAULT_MODEL === undefined && local ? { PGPT_DEFAULT_MODEL: 'prometheus-mini' } : {}),
  }
}

/** Rules that span several variables. */
function crossCheck(c: ParsedConfig): void {
  const issues: Array<{ variable: string; message: string }> = []
  // One rule for producers and consumers: every process that opens the queue knows its dead-letter queue.
  if (c.PGPT_QUEUE === 'sqs' && !c.PGPT_SQS_QUEUE_URL)
    issues.push({ variable: 'PGPT_SQS_QUEUE_URL', message: 'required when PGPT_QUEUE=sqs' })
  if (c.PGPT_QUEUE === 'sqs' && !c.PGPT_SQS_DLQ_URL)
    issues.push({ variable: 'PGPT_SQS_DLQ_URL', message: 'required when PGPT_QUEUE=sqs' })
  if (c.PGPT_STORE === 's3' && !c.PGPT_S3_BUCKET)
    issues.push({ variable: 'PGPT_S3_BUCKET', message: 'required when PGPT_STORE=s3' })
  if (c.PGPT_WEBHOOK_ALLOW_PRIVATE && c.PGPT_PROFILE !== 'local')
    issues.push({ variable: 'PGPT_WEBHOOK_ALLOW_PRIVATE', message: 'may only be true in the local profile' })
  if (issues.length) throw new ConfigError(issues)
}
