/**
 * An SQS server for tests: local-aws-sqs (an SQS JSON/Query-protocol server on
 * npm) on a free port of 127.0.0.1, started and stopped by the test itself.
 *
 * local-aws-sqs 2.0.2 departs from SQS in five ways that the Queue contract
 * would (rightly) catch, so this file loads its bundle with one-line
 * patches, each checked to apply exactly once (an upgrade that changes the
 * bundle fails loudly here instead of silently testing something else):
 *  1. ChangeMessageVisibility counted as a receive (ApproximateReceiveCount
 *     grew on every extend/release, and the redrive fired early). SQS counts
 *     receives only.
 *  2. A long poll waited until MaxNumberOfMessages were collected, and could
 *     return one message twice when its visibility expired during the poll.
 *     SQS answers as soon as any message is available.
 *  3. ApproximateNumberOfMessages counted in-flight messages too. SQS counts
 *     the messages available for retrieval.
 *  4. DeleteMessage deleted a standard queue's message by id, whatever the
 *     receipt handle. SQS: "you must provide the most recently received
 *     ReceiptHandle for the message (otherwise, the request succeeds, but the
 *     message will not be deleted)" (DeleteMessage API reference).
 *  5. ChangeMessageVisibility had no hold cap. SQS refuses to extend a
 *     message's visibility beyond 12 hours from its receive
 *     (InvalidParameterValue, "Total VisibilityTimeout for the message is
 *     beyond the limit [43200 seconds]"). Two patches: a receive stamps its
 *     time, and a visibility change beyond the queue's cap from it is refused
 *     with SQS's error. The cap is 43200 s, or what `createQueuePair` is
 *     given as `maxHoldSeconds`, so tests reach it in seconds.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createRequire, Module } from 'node:module'
import type { AddressInfo } from 'node:net'
import { dirname } from 'node:path'
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs'
import type { createRequestHandler as CreateRequestHandler } from 'local-aws-sqs'

const PATCHES: Array<[string, string, string]> = [
  [
    'visibility changes are not receives',
    'let n=Number(t.record.attributes.ApproximateReceiveCount)+1;',
    'let n=Number(t.record.attributes.ApproximateReceiveCount)+(i?0:1);',
  ],
  [
    'a long poll answers as soon as messages are available',
    'if(r.length==e){clearInterval(c),clearTimeout(n),o();break}}},10)',
    'if(r.length==e)break}r.length&&(clearInterval(c),clearTimeout(n),o())},10)',
  ],
  [
    'ApproximateNumberOfMessages counts visible messages only',
    'ApproximateNumberOfMessages:String(S(this,E).filter(o=>!o.delayed).length)',
    'ApproximateNumberOfMessages:String(S(this,E).filter(o=>!o.delayed&&o.visible).length)',
  ],
  [
    'a stale receipt handle does not delete',
    'else i!=-1&&l(this,D,zt).call(this,i);',
    'else i!=-1&&t==S(this,E)[i].record.ReceiptHandle&&l(this,D,zt).call(this,i);',
  ],
  [
    'a receive stamps its time (the hold cap counts from it)',
    'i||(t.record.ReceiptHandle=l(this,D,Gs).call(this,t.record.MessageId))',
    'i||(t.receivedAt=Date.now(),t.record.ReceiptHandle=l(this,D,Gs).call(this,t.record.MessageId))',
  ],
  [
    'a visibility change beyond the hold cap from the receive is refused, as SQS does',
    'if(!r)return!1;let n=Number(e);return l(this,D,Wt).call(this,r,n,!0),!0}',
    'if(!r)return!1;let n=Number(e),H=this.MaxHoldSeconds??43200;if(r.receivedAt&&Date.now()+n*1e3>r.receivedAt+H*1e3)throw new u("Value "+n+" for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit ["+H+" seconds]");return l(this,D,Wt).call(this,r,n,!0),!0}',
  ],
]

let patched: typeof CreateRequestHandler | undefined

function loadLocalAwsSqs(): typeof CreateRequestHandler {
  if (patched) return patched
  const file = createRequire(import.meta.url).resolve('local-aws-sqs')
  let code = readFileSync(file, 'utf8')
  for (const [why, from, to] of PATCHES) {
    const count = code.split(from).length - 1
    if (count !== 1) throw new Error(`sqs-server: patch '${why}' matches ${count} times in ${file}`)
    code = code.replace(from, to)
  }
  // Compile as the CommonJS module it is, resolving its own dependencies from its folder.
  const mod = new Module(file) as Module & { _compile(code: string, file: string): void }
  mod.filename = file
  mod.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(
    dirname(file),
  )
  mod._compile(code, file)
  patched = (mod.exports as { createRequestHandler: typeof CreateRequestHandler }).createRequestHandler
  return patched
}

export interface SqsServer {
  endpoint: string
  region: string
  credentials: { accessKeyId: string; secretAccessKey: string }
  /**
   * Creates `<name>-dlq` and `<name>` with a RedrivePolicy pointing at it;
   * `maxHoldSeconds` (default SQS's 43200) is the hold cap both enforce.
   */
  createQueuePair(
    name: string,
    opts: { visibilityTimeoutSeconds: number; maxReceiveCount: number; maxHoldSeconds?: number },
  ): Promise<{ queueUrl: string; deadLetterQueueUrl: string }>
  stop(): Promise<void>
}

const REGION = 'us-east-1'
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' }

/** The settings (environment variables) of a process that uses the queue pair `urls` of `sqs`. */
export function sqsEnv(
  sqs: Pick<SqsServer, 'endpoint' | 'region' | 'credentials'>,
  urls: { queueUrl: string; deadLetterQueueUrl: string },
): Record<string, string> {
  return {
    PGPT_QUEUE: 'sqs',
    PGPT_SQS_QUEUE_URL: urls.queueUrl,
    PGPT_SQS_DLQ_URL: urls.deadLetterQueueUrl,
    PGPT_SQS_ENDPOINT: sqs.endpoint,
    AWS_REGION: sqs.region,
    AWS_ACCESS_KEY_ID: sqs.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: sqs.credentials.secretAccessKey,
  }
}

export async function startSqsServer(): Promise<SqsServer> {
  const { service, requestHandler } = loadLocalAwsSqs()({
    port: 0,
    hostname: '127.0.0.1',
    region: REGION,
    emulateQueueCreationLifecycle: false,
  })
  const server = createServer((req, res) => void requestHandler(req, res))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  service.PORT = port // local-aws-sqs builds queue URLs from it
  const endpoint = `http://127.0.0.1:${port}`
  const admin = new SQSClient({ region: REGION, endpoint, credentials: CREDENTIALS })

  const createQueue = async (QueueName: string, Attributes: Record<string, string>, maxHold?: number) => {
    const { QueueUrl } = await admin.send(new CreateQueueCommand({ QueueName, Attributes }))
    if (!QueueUrl) throw new Error(`sqs-server: CreateQueue ${QueueName} returned no URL`)
    // Read by patch 5 (SQS's cap is fixed; this server's can be set per queue).
    const made = (service.Queues as Array<{ QueueName: string; MaxHoldSeconds?: number }>).find(
      (q) => q.QueueName === QueueName,
    )
    if (!made) throw new Error(`sqs-server: queue ${QueueName} not found after CreateQueue`)
    made.MaxHoldSeconds = maxHold
    return QueueUrl
  }

  return {
    endpoint,
    region: REGION,
    credentials: CREDENTIALS,
    async createQueuePair(name, opts) {
      const visibility = String(opts.visibilityTimeoutSeconds)
      const deadLetterQueueUrl = await createQueue(
        `${name}-dlq`,
        { VisibilityTimeout: visibility },
        opts.maxHoldSeconds,
      )
      const attrs = await admin.send(
        new GetQueueAttributesCommand({ QueueUrl: deadLetterQueueUrl, AttributeNames: ['QueueArn'] }),
      )
      const deadLetterTargetArn = attrs.Attributes?.QueueArn
      if (!deadLetterTargetArn) throw new Error('sqs-server: the dead-letter queue has no QueueArn')
      const queueUrl = await createQueue(
        name,
        {
          VisibilityTimeout: visibility,
          RedrivePolicy: JSON.stringify({ deadLetterTargetArn, maxReceiveCount: opts.maxReceiveCount }),
        },
        opts.maxHoldSeconds,
      )
      return { queueUrl, deadLetterQueueUrl }
    },
    async stop() {
      admin.destroy()
      service.resetAll()
      server.closeAllConnections()
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())))
    },
  }
}
