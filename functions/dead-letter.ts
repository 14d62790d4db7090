/**
 * Lambda handler of the jobs dead-letter queue (sst.config.ts subscribes it
 * with ReportBatchItemFailures). Each message is a job the workers could not
 * finish: the job is marked failed with `dead-lettered after N deliveries`
 * by the same code the workers' periodic drain runs (workers/dead-letter.ts
 * failDeadLetteredJob). A message is
 * acknowledged when handled; any message left unacknowledged (a store
 * error) is reported in batchItemFailures, so SQS delivers it again.
 *
 * Webhooks: a dead-lettered job's `failed` webhook (event `completed`) is sent
 * from here, signed with the tenant's secret (PGPT_WEBHOOK_SIGNING_KEY,
 * core/webhook-secrets.ts) by the same one-attempt code as the workers'
 * WebhookDispatcher (workers/webhooks/deliver.ts): same body, headers and
 * webhook-id, so Standard Webhooks receivers dedupe repeats. The workers'
 * durable DeliveryLog is a SQLite file a Lambda does not have; the retry log
 * here is the DLQ message itself: when the attempt fails, the message is
 * reported as a batch item failure and SQS delivers it again after the DLQ's
 * visibility timeout. On that redelivery the job is already failed
 * (dead_lettered), so only the webhook is tried again. The DLQ has no redrive
 * of its own, so retries are bounded by the message's receive count: after
 * `maxAttempts` receives beyond the source queue's maxReceiveCount (counted
 * either way, whether SQS kept the count across the move or not) the webhook
 * is given up and the message acknowledged.
 *
 * Configuration: core/config.ts from the function's environment. Job records
 * are the ObjectJobStore over the S3 bucket (PGPT_STORE=s3, PGPT_RECORDS=object),
 * the store the workers and the edge use in the aws profile. When
 * PGPT_EDGE_URL and PGPT_INTERNAL_TOKEN are set, the `failed` event is pushed
 * to the edge.
 */
import { HttpEvents } from '../core/adapters/http-events.js'
import { type Config, ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger, type Logger } from '../core/logger.js'
import type { Events } from '../core/ports/events.js'
import type { JobRecord, JobStore } from '../core/ports/job-store.js'
import { tenantWebhookSecret } from '../core/webhook-secrets.js'
import { memoryBackends, openWiring } from '../core/wiring.js'
import { type DrainResult, failDeadLetteredJob } from '../workers/dead-letter.js'
import { attemptDelivery } from '../workers/webhooks/deliver.js'
import { SVIX_SCHEDULE_MS, webhookId } from '../workers/webhooks/dispatcher.js'
import { toJobView } from '../workers/webhooks/payload.js'
import type { ResolveAll } from '../workers/webhooks/ssrf.js'

/** The parts of Lambda's SQS event we read. */
export interface SqsEventRecord {
  messageId: string
  receiptHandle: string
  body: string
  attributes: { ApproximateReceiveCount: string; SentTimestamp: string }
}
export interface SqsEvent {
  Records: SqsEventRecord[]
}
export interface SqsBatchResponse {
  batchItemFailures: Array<{ itemIdentifier: string }>
}

export interface DeadLetterWebhooks {
  /** The `whsec_…` secret that signs a tenant's webhooks. */
  secretFor: (tenant: string) => string
  /** Per attempt, ms (PGPT_WEBHOOK_TIMEOUT_MS); keep it under the function's timeout. */
  timeoutMs: number
  allowPrivate?: boolean
  resolve?: ResolveAll
  /** Attempts of one webhook (DLQ receives) before it is given up. Default 8, as the dispatcher's schedule. */
  maxAttempts?: number
}

export interface DeadLetterDeps {
  jobs: JobStore
  maxReceiveCount: number
  logger: Logger
  events?: Events
  /** Send dead-lettered jobs' `failed` webhooks; without it none is sent. */
  webhooks?: DeadLetterWebhooks
}

/** A job whose dead-letter `failed` webhook is due: failed by a dead-letter drain, with a webhook that wants `completed`. */
function wantsDeadLetterWebhook(job: JobRecord | null | undefined): job is JobRecord {
  if (!job?.webhook || job.state !== 'failed' || job.error?.code !== 'dead_lettered') return false
  const filter = job.webhook.eventsFilter
  return !filter.length || filter.includes('completed')
}

export function createDeadLetterHandler(deps: DeadLetterDeps) {
  const maxAttempts = deps.webhooks?.maxAttempts ?? SVIX_SCHEDULE_MS.length + 1

  /** One attempt of a job's `failed` webhook; false when SQS should deliver the message again. */
  async function sendFailedWebhook(job: JobRecord, record: SqsEventRecord): Promise<boolean> {
    const w = deps.webhooks
    if (!w) return true
    const id = webhookId(job.id, 'completed')
    const receives = Number(record.attributes?.ApproximateReceiveCount ?? 1)
    const log = deps.logger.child({
      requestId: job.requestId,
      jobId: job.id,
      webhookId: id,
      event: 'completed',
      messageId: record.messageId,
      receives,
    })
    const r = await attemptDelivery(
      {
        id,
        event: 'completed',
        url: job.webhook!.url,
        payload: JSON.stringify(toJobView(job)),
        requestId: job.requestId,
      },
      {
        secret: w.secretFor(job.tenant),
        timeoutMs: w.timeoutMs,
        allowPrivate: w.allowPrivate,
        resolve: w.resolve,
      },
    )
    if (r.outcome === 'delivered') {
      log.info({ status: r.status }, 'webhook delivered')
      return true
    }
    if (r.outcome === 'refused') {
      log.warn({ url: job.webhook!.url, reason: r.error }, 'webhook refused by the SSRF guard')
      return true
    }
    // The DLQ has no redrive: bound the retries by the receive count (it may or may not
    // include the source queue's receives, so allow for both).
    if (receives >= deps.maxReceiveCount + maxAttempts) {
      log.warn({ status: r.status, error: r.error }, 'webhook failed for good: retries exhausted')
      return true
    }
    log.info(
      { status: r.status, error: r.error },
      'webhook attempt failed; SQS will deliver the message again',
    )
    return false
  }

  return async function deadLetterHandler(
    event: SqsEvent,
  ): Promise<SqsBatchResponse & { result?: DrainResult }> {
    const records = event.Records ?? []
    const result: DrainResult = { failed: [], alreadyFinished: 0, dropped: 0 }
    const failures = new Set<string>()
    const webhooksDue: Array<{ job: JobRecord; record: SqsEventRecord }> = []
    let storeDown = false
    // Job records first, one message at a time, as the workers' drain: after a store
    // error the rest of the batch is left for SQS to deliver again.
    for (const record of records) {
      if (storeDown) {
        failures.add(record.messageId)
        continue
      }
      try {
        let marked: JobRecord | undefined
        const r = await failDeadLetteredJob(
          record.body,
          {
            jobs: deps.jobs,
            maxReceiveCount: deps.maxReceiveCount,
            events: deps.events,
            logger: deps.logger,
            onJobEvent: (job) => {
              marked = job
            },
          },
          record.messageId,
        )
        if (r.outcome === 'failed' && r.jobId) result.failed.push(r.jobId)
        else if (r.outcome === 'already_finished') result.alreadyFinished++
        else result.dropped++
        // A redelivery after a failed webhook attempt finds the job already failed: try the webhook again.
        const job =
          marked ??
          (deps.webhooks && r.outcome === 'already_finished' && r.jobId
            ? await deps.jobs.getById(r.jobId)
            : null)
        if (deps.webhooks && wantsDeadLetterWebhook(job)) webhooksDue.push({ job, record })
      } catch (err) {
        deps.logger.error(
          { err, messageId: record.messageId },
          'dead-letter batch failed; unhandled messages will be retried',
        )
        storeDown = true
        failures.add(record.messageId)
      }
    }
    // Webhooks at once: each attempt is bounded by timeoutMs, the batch by one of them.
    const sent = await Promise.all(webhooksDue.map((d) => sendFailedWebhook(d.job, d.record)))
    webhooksDue.forEach((d, i) => {
      if (!sent[i]) failures.add(d.record.messageId)
    })
    return {
      batchItemFailures: records
        .filter((r) => failures.has(r.messageId))
        .map((r) => ({ itemIdentifier: r.messageId })),
      result,
    }
  }
}

function fromConfig(config: Config): DeadLetterDeps {
  const logger = createLogger({ service: 'dead-letter', level: config.PGPT_LOG_LEVEL })
  // The job records the workers write: a Lambda has no SQLite file to share.
  if (config.PGPT_RECORDS !== 'object')
    throw new ConfigError([
      { variable: 'PGPT_RECORDS', message: `must be 'object' here (got '${config.PGPT_RECORDS}')` },
    ])
  const { jobs } = openWiring(config, memoryBackends(config)).records()
  const events =
    config.PGPT_EDGE_URL && config.PGPT_INTERNAL_TOKEN
      ? new HttpEvents({ edgeUrl: config.PGPT_EDGE_URL, token: config.PGPT_INTERNAL_TOKEN })
      : undefined
  if (!config.PGPT_WEBHOOK_SIGNING_KEY)
    throw new ConfigError([
      { variable: 'PGPT_WEBHOOK_SIGNING_KEY', message: "required here (signs dead-lettered jobs' webhooks)" },
    ])
  const key = config.PGPT_WEBHOOK_SIGNING_KEY
  const webhooks: DeadLetterWebhooks = {
    secretFor: (tenant) => tenantWebhookSecret(key, tenant),
    timeoutMs: config.PGPT_WEBHOOK_TIMEOUT_MS,
    allowPrivate: config.PGPT_WEBHOOK_ALLOW_PRIVATE,
  }
  return { jobs, maxReceiveCount: config.PGPT_MAX_RECEIVE_COUNT, logger, events, webhooks }
}

let wired: ReturnType<typeof createDeadLetterHandler> | undefined

/** The Lambda entry (`functions/dead-letter.handler`); wired on first invocation, reused while warm. */
export const handler = (event: SqsEvent) => {
  wired ??= createDeadLetterHandler(fromConfig(loadConfig()))
  return wired(event)
}
