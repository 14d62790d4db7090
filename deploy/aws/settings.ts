/**
 * Deploy-time settings of sst.config.ts, read from the environment of
 * `npx sst deploy` (never from the running services, which read core/config.ts).
 * A bad value stops the deploy naming the variable and the rule.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | PGPT_DEPLOY_GPU_FAMILY | g5 | EC2 GPU instance family of the workers (x86_64, NVIDIA) |
 * | PGPT_DEPLOY_GPU_SIZE | xlarge | instance size within the family |
 * | PGPT_DEPLOY_MIN_WORKERS | 0 | workers kept with an empty queue (0: scale to zero) |
 * | PGPT_DEPLOY_MAX_WORKERS | 4 | upper bound of the worker service |
 * | PGPT_DEPLOY_MESSAGES_PER_WORKER | 8 | backlog one worker absorbs |
 * | PGPT_DEPLOY_IDLE_MINUTES | 15 | minutes of empty queue before scaling to the minimum |
 * | PGPT_DEPLOY_WORKER_IMAGE | (the stage's ECR repository):latest | worker image URI |
 * | PGPT_DEPLOY_AMI_PARAMETER | ECS GPU AMI (Amazon Linux 2023) | SSM parameter holding the instance AMI id |
 * | PGPT_DEPLOY_EDGE | lambda | where the edge runs: `lambda` (deployed here) or `cloudflare` (wrangler) |
 * | PGPT_DEPLOY_EDGE_URL | (the Lambda URL) | the edge's URL the workers push events to; required with `cloudflare` |
 */
import { DEFAULT_SCALING, type ScalingOptions } from './autoscaling.js'

/** x86_64 NVIDIA families (the worker image is linux/amd64; Graviton g5g is not one). */
export const GPU_FAMILIES = [
  'g4dn',
  'g5',
  'g6',
  'g6e',
  'gr6',
  'p3',
  'p4d',
  'p4de',
  'p5',
  'p5e',
  'p5en',
] as const

const SIZES = /^(?:xlarge|[1-9][0-9]?xlarge|metal)$/

export const DEFAULT_AMI_PARAMETER =
  '/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id'

export interface DeploySettings {
  instanceType: string
  scaling: ScalingOptions
  workerImage?: string
  amiParameter: string
  edge: 'lambda' | 'cloudflare'
  /** Set with edge `cloudflare`; with `lambda` the stack uses the function's URL. */
  edgeUrl?: string
}

function intVar(
  env: Record<string, string | undefined>,
  name: string,
  fallback: number,
  min: number,
): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}: must be an integer >= ${min} (got '${raw}')`)
  return n
}

export function deploySettings(env: Record<string, string | undefined>): DeploySettings {
  const family = env.PGPT_DEPLOY_GPU_FAMILY || 'g5'
  const size = env.PGPT_DEPLOY_GPU_SIZE || 'xlarge'
  if (!(GPU_FAMILIES as readonly string[]).includes(family))
    throw new Error(`PGPT_DEPLOY_GPU_FAMILY: '${family}' is not one of ${GPU_FAMILIES.join(', ')}`)
  if (!SIZES.test(size))
    throw new Error(`PGPT_DEPLOY_GPU_SIZE: '${size}' is not an EC2 size like xlarge, 12xlarge`)
  const scaling: ScalingOptions = {
    minWorkers: intVar(env, 'PGPT_DEPLOY_MIN_WORKERS', DEFAULT_SCALING.minWorkers, 0),
    maxWorkers: intVar(env, 'PGPT_DEPLOY_MAX_WORKERS', DEFAULT_SCALING.maxWorkers, 1),
    messagesPerWorker: intVar(env, 'PGPT_DEPLOY_MESSAGES_PER_WORKER', DEFAULT_SCALING.messagesPerWorker, 1),
    idleMinutes: intVar(env, 'PGPT_DEPLOY_IDLE_MINUTES', DEFAULT_SCALING.idleMinutes, 1),
  }
  if (scaling.maxWorkers < scaling.minWorkers)
    throw new Error('PGPT_DEPLOY_MAX_WORKERS: must be >= PGPT_DEPLOY_MIN_WORKERS')
  const edge = env.PGPT_DEPLOY_EDGE || 'lambda'
  if (edge !== 'lambda' && edge !== 'cloudflare')
    throw new Error(`PGPT_DEPLOY_EDGE: must be lambda or cloudflare (got '${edge}')`)
  const edgeUrl = env.PGPT_DEPLOY_EDGE_URL || undefined
  if (edge === 'cloudflare' && !edgeUrl?.startsWith('https://'))
    throw new Error(
      'PGPT_DEPLOY_EDGE_URL: the https:// URL of the Workers edge is required with PGPT_DEPLOY_EDGE=cloudflare',
    )
  return {
    instanceType: `${family}.${size}`,
    scaling,
    ...(env.PGPT_DEPLOY_WORKER_IMAGE ? { workerImage: env.PGPT_DEPLOY_WORKER_IMAGE } : {}),
    amiParameter: env.PGPT_DEPLOY_AMI_PARAMETER || DEFAULT_AMI_PARAMETER,
    edge,
    ...(edgeUrl ? { edgeUrl } : {}),
  }
}
