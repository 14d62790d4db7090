/**
 * Lambda handler of the jobs dead-letter queue (sst.config.ts subscribes it
 * with ReportBatchItemFailures). Each message is a job the workers could not
 * finish: the job is marked failed with `dead-lettered after N deliveries`
 * by the same code the workers' periodic drain runs (workers/dead-letter.ts
 * drainDeadLetter), over a queue made of the event's records. A message is
 * acknowledged when handled; any message left unacknowledged (a store
 * error) is reported in batchItemFailures, so SQS delivers it again.
 *
 * Configuration: core/config.ts from the function's environment. Job records
 * are the ObjectJobStore over the S3 bucket (PGPT_STORE=s3, PGPT_RECORDS=object),
 * the store the workers and the edge use in the aws profile. When
 * PGPT_EDGE_URL and PGPT_INTERNAL_TOKEN are set, the `failed` event is pushed
 * to the edge. (Webhooks of dead-lettered jobs are sent by the workers' own
 * drain only: their delivery log lives with the workers.)
 */
import { HttpEvents } from '../core/adapters/http-events.js'
import { type Config, ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { createLogger, type Logger } from '../core/logger.js'
import type { Events } from '../core/ports/events.js'
import type { JobStore } from '../core/ports/job-store.js'
import type { Queue, QueueMessage } from '../core/ports/queue.js'
import { memoryBackends, openWiring } from '../core/wiring.js'
import { type DrainResult, drainDeadLetter } from '../workers/dead-letter.js'

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

/** A Queue over one Lambda batch: receive hands out the records once; ack marks them done. */
export class EventBatchQueue implements Queue {
  readonly name = 'lambda-sqs-batch'
  private pending: QueueMessage[]
  private readonly acked = new Set<string>()

  constructor(private readonly records: SqsEventRecord[]) {
    this.pending = records.map((r) => ({
      id: r.messageId,
      receiptHandle: r.messageId,
      body: r.body,
      receiveCount: Number(r.attributes?.ApproximateReceiveCount ?? 1),
      sentAt: Number(r.attributes?.SentTimestamp ?? Date.now()),
    }))
  }

  async receive(options: { maxMessages?: number } = {}): Promise<QueueMessage[]> {
    return this.pending.splice(0, options.maxMessages ?? 10)
  }

  async ack(receiptHandle: string): Promise<void> {
    this.acked.add(receiptHandle)
  }

  /** Message ids that were not acknowledged: the batch item failures. */
  unacked(): string[] {
    return this.records.map((r) => r.messageId).filter((id) => !this.acked.has(id))
  }

  async send(): Promise<{ id: string }> {
    throw new Error('EventBatchQueue: send is not supported')
  }
  async extend(): Promise<void> {}
  async release(): Promise<void> {}
  async stats() {
    return { visible: this.pending.length, inFlight: 0, delayed: 0 }
  }
}

export interface DeadLetterDeps {
  jobs: JobStore
  maxReceiveCount: number
  logger: Logger
  events?: Events
}

export function createDeadLetterHandler(deps: DeadLetterDeps) {
  return async function deadLetterHandler(
    event: SqsEvent,
  ): Promise<SqsBatchResponse & { result?: DrainResult }> {
    const queue = new EventBatchQueue(event.Records ?? [])
    let result: DrainResult | undefined
    try {
      result = await drainDeadLetter({
        deadLetter: queue,
        jobs: deps.jobs,
        maxReceiveCount: deps.maxReceiveCount,
        events: deps.events,
        logger: deps.logger,
        limit: event.Records?.length ?? 0,
      })
    } catch (err) {
      deps.logger.error({ err }, 'dead-letter batch failed; unhandled messages will be retried')
    }
    return { batchItemFailures: queue.unacked().map((itemIdentifier) => ({ itemIdentifier })), result }
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
  return { jobs, maxReceiveCount: config.PGPT_MAX_RECEIVE_COUNT, logger, events }
}

let wired: ReturnType<typeof createDeadLetterHandler> | undefined

/** The Lambda entry (`functions/dead-letter.handler`); wired on first invocation, reused while warm. */
export const handler = (event: SqsEvent) => {
  wired ??= createDeadLetterHandler(fromConfig(loadConfig()))
  return wired(event)
}
