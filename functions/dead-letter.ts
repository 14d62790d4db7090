/**
 * Lambda handler of the jobs dead-letter queue (sst.config.ts subscribes it
 * with ReportBatchItemFailures). Each message is a job the workers could not
 * finish: the job is marked failed with `dead-lettered after N deliveries`
 * by the same code the workers' periodic drain runs (workers/dead-letter.ts
 * failDeadLetteredJob). A message is
 * acknowledged when handled; any message left unacknowledged (a store
 * error) is reported in batchItemFailures, so SQS delivers it again.
 *
 * Webhooks: a dead-lettered job's `failed` webhook (event `completed`) goes
 * into the durable delivery log the workers' dispatchers send from (the
 * records' `deliveries`: objects in the bucket, core/adapters/object-delivery-log.ts)
 * and is attempted at once by a WebhookDispatcher here: same body, headers,
 * signature (the tenant's secret from PGPT_WEBHOOK_SIGNING_KEY) and webhook-id
 * as any webhook, so Standard Webhooks receivers dedupe repeats. A failed
 * attempt is scheduled in the log like any other, and the workers'
 * dispatchers send the retries on the usual schedule: they outlive this
 * function's run. The message is acknowledged once the delivery is logged; a
 * log that cannot be written leaves the message for SQS to deliver again (the
 * job is already failed then, so only the webhook is logged, once per id).
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
import type { DeliveryLog } from '../core/ports/delivery-log.js'
import type { Events } from '../core/ports/events.js'
import type { JobRecord, JobStore } from '../core/ports/job-store.js'
import { tenantWebhookSecret } from '../core/webhook-secrets.js'
import { memoryBackends, openWiring } from '../core/wiring.js'
import { type DrainResult, failDeadLetteredJob } from '../workers/dead-letter.js'
import { WebhookDispatcher } from '../workers/webhooks/dispatcher.js'
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
  /** The durable delivery log the workers' dispatchers send retries from. */
  log: DeliveryLog
  /** The `whsec_…` secret that signs a tenant's webhooks. */
  secretFor: (tenant: string) => string
  /** Per attempt, ms (PGPT_WEBHOOK_TIMEOUT_MS); keep it under the function's timeout. */
  timeoutMs: number
  allowPrivate?: boolean
  resolve?: ResolveAll
  /** Waits before retry 1, 2, …; default the dispatcher's (Svix's). Only the first is set from here. */
  retryScheduleMs?: number[]
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
  const w = deps.webhooks
  const dispatcher =
    w &&
    new WebhookDispatcher({
      log: w.log,
      secretFor: w.secretFor,
      timeoutMs: w.timeoutMs,
      allowPrivate: w.allowPrivate,
      resolve: w.resolve,
      retryScheduleMs: w.retryScheduleMs,
      logger: deps.logger.child({ component: 'webhooks' }),
    })

  /** Logs a job's `failed` webhook and attempts it once; false when it could not be logged (SQS delivers again). */
  async function sendFailedWebhook(job: JobRecord, record: SqsEventRecord): Promise<boolean> {
    if (!dispatcher) return true
    const log = deps.logger.child({ requestId: job.requestId, jobId: job.id, messageId: record.messageId })
    const event = {
      jobId: job.id,
      run: job.attempts,
      seq: 0,
      type: 'failed' as const,
      data: job.error ?? null,
      at: Date.now(),
    }
    let id: string | null
    try {
      id = await dispatcher.logEvent(job, event)
    } catch (err) {
      log.error({ err }, 'webhook not logged; SQS will deliver the message again')
      return false
    }
    if (!id) return true
    // Logged: from here a failure is a retry the workers' dispatchers send, not a reason to keep the message.
    await dispatcher
      .deliverNow(id)
      .catch((err) =>
        log.warn({ err, webhookId: id }, 'first webhook attempt not made; the workers will send it'),
      )
    return true
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
    // Webhooks at once: each first attempt is bounded by timeoutMs, the batch by one of them.
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
  // The job records and webhook delivery log the workers use: a Lambda has no SQLite file to share.
  if (config.PGPT_RECORDS !== 'object')
    throw new ConfigError([
      { variable: 'PGPT_RECORDS', message: `must be 'object' here (got '${config.PGPT_RECORDS}')` },
    ])
  const { jobs, deliveries } = openWiring(config, memoryBackends(config)).records()
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
    log: deliveries,
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
