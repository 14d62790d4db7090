/**
 * Stage-aware names of the AWS resources (sst.config.ts). One AWS account may
 * hold several stages (`dev`, `pr-42`, `production`); every physical name
 * carries the app and the stage, so stages never share a queue or a bucket.
 * SQS queue names: at most 80 characters of letters, digits, `-` and `_`.
 */

export const APP = 'prometheus-gpt'

/** SST stage names we accept: lowercase letters, digits and `-`, 1 to 24 characters. */
export function checkStage(stage: string): string {
  if (!/^[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?$/.test(stage))
    throw new Error(
      `stage '${stage}': use 1 to 24 lowercase letters, digits or '-' (not at either end), e.g. dev or pr-42`,
    )
  return stage
}

export const isProduction = (stage: string) => stage === 'production'

/** `prometheus-gpt-<stage>-<base>`. */
export function resourceName(stage: string, base: string): string {
  if (!/^[a-z0-9-]+$/.test(base))
    throw new Error(`resource base name '${base}': lowercase letters, digits, '-'`)
  return `${APP}-${checkStage(stage)}-${base}`
}

export interface QueueNames {
  /** The jobs queue the edge sends to and the workers receive from. */
  queue: string
  /** Its dead-letter queue: `<queue>-dlq`, the convention the local queue uses too. */
  deadLetter: string
}

export function queueNames(stage: string): QueueNames {
  const queue = resourceName(stage, 'jobs')
  const names = { queue, deadLetter: `${queue}-dlq` }
  for (const n of Object.values(names))
    if (n.length > 80) throw new Error(`SQS queue name '${n}' is longer than 80 characters`)
  return names
}

/** What `sst remove` does with data: production keeps its bucket and queues, other stages delete them. */
export const removalPolicy = (stage: string): 'retain' | 'remove' =>
  isProduction(stage) ? 'retain' : 'remove'
