/**
 * Queue on Amazon SQS (or any SQS-protocol endpoint: ElasticMQ, local-aws-sqs):
 * the production adapter of the Queue port (core/ports/queue.ts).
 *
 * The queue and its dead-letter queue are created by whoever owns the
 * infrastructure (sst.config.ts, test/servers/sqs-server.ts), with a
 * RedrivePolicy `{ deadLetterTargetArn, maxReceiveCount }`; SQS itself moves
 * a message to the dead-letter queue. `maxReceiveCount` here only reports it.
 * Every receive passes this adapter's visibility timeout, so the port's
 * semantics do not depend on the queue's own default. SQS refuses an extend
 * beyond 12 hours from the receive (InvalidParameterValue, "Total
 * VisibilityTimeout for the message is beyond the limit [43200 seconds]");
 * `extend` throws that as the port's HoldLimitError.
 *
 * `@aws-sdk/client-sqs` is imported on first use, so loading the adapters'
 * index never loads the AWS SDK. References: unstorage `src/drivers/s3.ts`
 * (lazy client, errors with cause); sqs-consumer `src/consumer.ts`.
 */
import type { Message, SQSClient } from '@aws-sdk/client-sqs'
import {
  HoldLimitError,
  type Queue,
  type QueueMessage,
  type QueueStats,
  type QueueWithDeadLetter,
  type ReceiveOptions,
  type SendOptions,
  SQS_MAX_HOLD_SECONDS,
} from '../ports/queue.js'
import { AdapterError, createError } from './adapter-error.js'

export const SQS_QUEUE = 'sqs-queue'

export interface SqsQueueOptions {
  /** URL of the work queue (it carries the RedrivePolicy). */
  queueUrl: string
  /** URL of its dead-letter queue. */
  deadLetterQueueUrl: string
  region: string
  /** Another SQS endpoint (ElasticMQ, local-aws-sqs); default AWS. */
  endpoint?: string
  /** Default: the SDK's provider chain (env, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Time a received message stays invisible, in seconds (0–43200). */
  visibilityTimeoutSeconds: number
  /** The queue's RedrivePolicy maxReceiveCount (1–1000), as configured on the queue. */
  maxReceiveCount: number
  /**
   * SQS's hold cap, seconds: 43200 (the default) on AWS, where it is fixed.
   * Only a test server that enforces a smaller one (test/servers/sqs-server.ts)
   * is given less.
   */
  maxHoldSeconds?: number
}

type Sdk = typeof import('@aws-sdk/client-sqs')

/** One SDK client shared by a queue and its dead-letter queue, created on first use. */
class Client {
  private client: Promise<{ sdk: Sdk; client: SQSClient }> | undefined

  constructor(private readonly options: SqsQueueOptions) {}

  get(): Promise<{ sdk: Sdk; client: SQSClient }> {
    this.client ??= import('@aws-sdk/client-sqs').then((sdk) => ({
      sdk,
      client: new sdk.SQSClient({
        region: this.options.region,
        endpoint: this.options.endpoint,
        credentials: this.options.credentials,
      }),
    }))
    return this.client
  }

  async close() {
    const made = this.client
    this.client = undefined
    if (made) (await made).client.destroy()
  }
}

function checkRange(what: string, value: number, min: number, max: number) {
  if (!Number.isInteger(value) || value < min || value > max)
    throw createError(SQS_QUEUE, `${what} must be an integer from ${min} to ${max}, got ${value}`)
}

/** SQS's refusal of an extend past its 12-hour cap (the reason in its InvalidParameterValue). */
const BEYOND_HOLD_CAP = /Total VisibilityTimeout for the message is beyond the limit/i

const nameOf = (url: string) => url.replace(/\/+$/, '').split('/').at(-1) ?? url

class SqsQueue implements Queue {
  readonly name: string

  constructor(
    private readonly client: Client,
    private readonly url: string,
    private readonly visibilityTimeoutSeconds: number,
    readonly maxHoldSeconds: number,
  ) {
    this.name = nameOf(url)
  }

  async send(body: string, options: SendOptions = {}): Promise<{ id: string }> {
    const delay = options.delaySeconds ?? 0
    checkRange('delaySeconds', delay, 0, 900)
    const out = await this.call(
      'send',
      (sdk) => new sdk.SendMessageCommand({ QueueUrl: this.url, MessageBody: body, DelaySeconds: delay }),
    )
    if (!out.MessageId) throw createError(SQS_QUEUE, `${this.name}: SendMessage returned no MessageId`)
    return { id: out.MessageId }
  }

  async receive(options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    const max = options.maxMessages ?? 1
    const wait = options.waitTimeSeconds ?? 0
    const visibility = options.visibilityTimeoutSeconds ?? this.visibilityTimeoutSeconds
    checkRange('maxMessages', max, 1, 10)
    checkRange('waitTimeSeconds', wait, 0, 20)
    checkRange('visibilityTimeoutSeconds', visibility, 0, 43200)
    if (options.signal?.aborted) return []
    const attributes = ['ApproximateReceiveCount', 'SentTimestamp'] as const
    // Before the request: SQS counts its cap from when it gets the request, never earlier than this.
    const receivedAt = Date.now()
    let out: { Messages?: Message[] }
    try {
      out = await this.call(
        'receive',
        (sdk) =>
          new sdk.ReceiveMessageCommand({
            QueueUrl: this.url,
            MaxNumberOfMessages: max,
            WaitTimeSeconds: wait,
            VisibilityTimeout: visibility,
            MessageSystemAttributeNames: [...attributes],
            // The deprecated parameter, still the only one some SQS-compatible servers read (local-aws-sqs).
            AttributeNames: ['All'],
          }),
        options.signal,
      )
    } catch (err) {
      if (options.signal?.aborted) return [] // shutdown: an aborted long poll is not an error
      throw err
    }
    return (out.Messages ?? []).map((m) => {
      if (!m.MessageId || !m.ReceiptHandle || m.Body === undefined)
        throw createError(SQS_QUEUE, `${this.name}: ReceiveMessage returned an incomplete message`)
      return {
        id: m.MessageId,
        receiptHandle: m.ReceiptHandle,
        body: m.Body,
        receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1),
        sentAt: Number(m.Attributes?.SentTimestamp ?? Date.now()),
        receivedAt,
      }
    })
  }

  async extend(receiptHandle: string, seconds: number): Promise<void> {
    checkRange('seconds', seconds, 0, 43200)
    try {
      await this.call(
        'extend',
        (sdk) =>
          new sdk.ChangeMessageVisibilityCommand({
            QueueUrl: this.url,
            ReceiptHandle: receiptHandle,
            VisibilityTimeout: seconds,
          }),
      )
    } catch (err) {
      const cause = err instanceof AdapterError ? err.cause : err
      if (cause instanceof Error && BEYOND_HOLD_CAP.test(cause.message))
        throw new HoldLimitError(this.name, this.maxHoldSeconds, { cause })
      throw err
    }
  }

  async ack(receiptHandle: string): Promise<void> {
    await this.call(
      'ack',
      (sdk) => new sdk.DeleteMessageCommand({ QueueUrl: this.url, ReceiptHandle: receiptHandle }),
    )
  }

  async release(receiptHandle: string): Promise<void> {
    await this.call(
      'release',
      (sdk) =>
        new sdk.ChangeMessageVisibilityCommand({
          QueueUrl: this.url,
          ReceiptHandle: receiptHandle,
          VisibilityTimeout: 0,
        }),
    )
  }

  /** From GetQueueAttributes; SQS's counters are approximate and it does not report message age. */
  async stats(): Promise<QueueStats> {
    const out = await this.call(
      'stats',
      (sdk) =>
        new sdk.GetQueueAttributesCommand({
          QueueUrl: this.url,
          AttributeNames: [
            'ApproximateNumberOfMessages',
            'ApproximateNumberOfMessagesNotVisible',
            'ApproximateNumberOfMessagesDelayed',
          ],
        }),
    )
    const a = out.Attributes ?? {}
    return {
      visible: Number(a.ApproximateNumberOfMessages ?? 0),
      inFlight: Number(a.ApproximateNumberOfMessagesNotVisible ?? 0),
      delayed: Number(a.ApproximateNumberOfMessagesDelayed ?? 0),
    }
  }

  /** Destroys the SDK client shared with the other queue of the pair. */
  async close(): Promise<void> {
    await this.client.close()
  }

  // biome-ignore lint/suspicious/noExplicitAny: each command has its own output type; callers read known fields.
  private async call(op: string, command: (sdk: Sdk) => any, signal?: AbortSignal): Promise<any> {
    const { sdk, client } = await this.client.get()
    try {
      return await client.send(command(sdk), signal ? { abortSignal: signal } : undefined)
    } catch (cause) {
      throw createError(SQS_QUEUE, `${this.name}: ${op} failed`, { cause })
    }
  }
}

export function createSqsQueue(options: SqsQueueOptions): QueueWithDeadLetter {
  if (!options.queueUrl) throw createError(SQS_QUEUE, 'queueUrl is required')
  if (!options.deadLetterQueueUrl) throw createError(SQS_QUEUE, 'deadLetterQueueUrl is required')
  if (!options.region) throw createError(SQS_QUEUE, 'region is required')
  checkRange('visibilityTimeoutSeconds', options.visibilityTimeoutSeconds, 0, 43200)
  checkRange('maxReceiveCount', options.maxReceiveCount, 1, 1000)
  const maxHold = options.maxHoldSeconds ?? SQS_MAX_HOLD_SECONDS
  checkRange('maxHoldSeconds', maxHold, 1, SQS_MAX_HOLD_SECONDS)
  const client = new Client(options)
  return {
    queue: new SqsQueue(client, options.queueUrl, options.visibilityTimeoutSeconds, maxHold),
    deadLetter: new SqsQueue(client, options.deadLetterQueueUrl, options.visibilityTimeoutSeconds, maxHold),
    maxReceiveCount: options.maxReceiveCount,
  }
}
