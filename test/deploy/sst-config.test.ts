/**
 * sst.config.ts cannot be typechecked or synthesized offline (its platform
 * types and providers come from `sst install`). This test runs its `run()`
 * against stand-ins of SST's globals that record every resource, and checks
 * the wiring: queue + DLQ redrive, DLQ subscriber with partial batch
 * responses, the cleanup cron, the GPU task, the scaling policies built from
 * deploy/aws/autoscaling.ts, the outputs.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { busySteps, DEFAULT_SCALING, idlePlan } from '../../deploy/aws/index.js'

interface Made {
  type: string
  name: string
  args: Record<string, unknown>
  subscriptions: unknown[][]
}

/** A stand-in of a Pulumi Output: a printable value with apply. */
const out = (label: string): unknown => ({
  label,
  apply: (fn: (v: string) => unknown) => fn(label),
  toString: () => label,
})

function install() {
  const made: Made[] = []
  const resource = (type: string) =>
    function Resource(name: string, args: Record<string, unknown> = {}) {
      const rec: Made = { type, name, args, subscriptions: [] }
      made.push(rec)
      return new Proxy(rec, {
        get(_t, prop) {
          if (prop === 'subscribe')
            return (...a: unknown[]) => {
              rec.subscriptions.push(a)
            }
          if (prop === 'then') return undefined
          return out(`${name}.${String(prop)}`)
        },
      })
    }
  const namespace = (prefix: string): unknown =>
    new Proxy(
      {},
      {
        get(_t, prop) {
          const p = String(prop)
          if (p === 'getRegionOutput') return () => ({ name: out('region') })
          if (/^[A-Z]/.test(p)) return resource(`${prefix}.${p}`)
          return namespace(`${prefix}.${p}`)
        },
      },
    )
  const g = globalThis as Record<string, unknown>
  g.$config = (c: unknown) => c
  g.$app = { stage: 'dev' }
  g.sst = namespace('sst')
  g.aws = new Proxy(namespace('aws') as object, {
    get(t, prop) {
      if (prop === 'getRegionOutput') return () => ({ name: out('region') })
      if (prop === 'ssm')
        return {
          getParameterOutput: (a: { name: string }) => ({ value: out(`ssm:${a.name}`) }),
          Parameter: resource('aws.ssm.Parameter'),
        }
      return Reflect.get(t, prop)
    },
  })
  g.$interpolate = (s: TemplateStringsArray, ...v: unknown[]) =>
    s.reduce((a, p, i) => a + p + (i < v.length ? String(v[i]) : ''), '')
  g.$jsonStringify = (v: unknown) =>
    JSON.stringify(v, (_k, x) => (x && typeof x === 'object' && 'label' in x ? String(x) : x))
  g.$util = { secret: (v: unknown) => v }
  return made
}

const GLOBALS = ['$config', '$app', 'sst', 'aws', '$interpolate', '$jsonStringify', '$util']
let saved: Record<string, string | undefined>
beforeEach(() => {
  saved = { ...process.env }
})
afterEach(() => {
  for (const k of GLOBALS) delete (globalThis as Record<string, unknown>)[k]
  process.env = saved
})

async function synth(env: Record<string, string> = {}) {
  const made = install()
  for (const k of Object.keys(process.env)) if (k.startsWith('PGPT_DEPLOY_')) delete process.env[k]
  Object.assign(process.env, env)
  // A non-literal specifier: tsc must not follow it into sst.config.ts (its globals are SST's).
  const file = '../../sst.config.js'
  const { default: config } = (await import(/* @vite-ignore */ file)) as {
    default: { app(i: { stage: string }): Record<string, unknown>; run(): Promise<Record<string, unknown>> }
  }
  const outputs = await config.run()
  const find = (type: string, name?: string) =>
    made.filter((m) => m.type === type && (!name || m.name === name))
  return { made, outputs, find, app: config.app }
}

describe('sst.config.ts', () => {
  it('keeps production, removes other stages', async () => {
    const { app } = await synth()
    expect(app({ stage: 'production' })).toMatchObject({
      name: 'prometheus-gpt',
      removal: 'retain',
      home: 'aws',
    })
    expect(app({ stage: 'dev' })).toMatchObject({ removal: 'remove' })
  })

  it('wires the queue to its DLQ, the DLQ to its Lambda, and the cleanup cron', async () => {
    const { find } = await synth()
    const [jobs] = find('sst.aws.Queue', 'Jobs')
    const [dlq] = find('sst.aws.Queue', 'JobsDlq')
    expect(jobs.args).toMatchObject({
      visibilityTimeout: '60 seconds',
      dlq: { retry: 5 },
      transform: { queue: { name: 'prometheus-gpt-dev-jobs' } },
    })
    expect(String((jobs.args.dlq as { queue: unknown }).queue)).toBe('JobsDlq.arn')
    expect(dlq.args).toMatchObject({ transform: { queue: { name: 'prometheus-gpt-dev-jobs-dlq' } } })
    expect(dlq.subscriptions).toHaveLength(1)
    const [fn, opts] = dlq.subscriptions[0] as [Record<string, unknown>, unknown]
    expect(fn).toMatchObject({ handler: 'functions/dead-letter.handler', timeout: '60 seconds' })
    expect(fn.environment).toMatchObject({
      PGPT_RECORDS: 'object',
      PGPT_STORE: 's3',
      PGPT_MAX_RECEIVE_COUNT: '5',
    })
    // It signs dead-lettered jobs' `failed` webhooks.
    expect(String((fn.environment as Record<string, unknown>).PGPT_WEBHOOK_SIGNING_KEY)).toBe(
      'WebhookSigningKey.value',
    )
    expect(opts).toEqual({ batch: { size: 10, partialResponses: true } })
    const [cron] = find('sst.aws.Cron')
    expect(cron.args).toMatchObject({ function: { handler: 'functions/cleanup.handler' } })
    const [api] = find('sst.aws.Function', 'Api')
    expect(api.args).toMatchObject({ handler: 'functions/api.handler', url: true })
  })

  it('runs one GPU worker per task on the configured instance family, secrets from SSM', async () => {
    const { find } = await synth({ PGPT_DEPLOY_GPU_FAMILY: 'g6', PGPT_DEPLOY_GPU_SIZE: '2xlarge' })
    expect(find('aws.ec2.LaunchTemplate')[0].args).toMatchObject({ instanceType: 'g6.2xlarge' })
    const [task] = find('aws.ecs.TaskDefinition')
    const [container] = JSON.parse(task.args.containerDefinitions as string)
    expect(container.resourceRequirements).toEqual([{ type: 'GPU', value: '1' }])
    const env = Object.fromEntries(
      container.environment.map((e: { name: string; value: string }) => [e.name, e.value]),
    )
    expect(env).toMatchObject({
      PGPT_QUEUE: 'sqs',
      PGPT_STORE: 's3',
      PGPT_RECORDS: 'object',
      PGPT_WORKER_METRICS_PORT: '9464',
    })
    expect(container.secrets.map((s: { name: string }) => s.name).sort()).toEqual([
      'PGPT_INTERNAL_TOKEN',
      'PGPT_METRICS_TOKEN',
      'PGPT_WEBHOOK_SIGNING_KEY',
    ])
    expect(JSON.stringify(container.environment)).not.toMatch(/InternalToken\.value/)
  })

  it('scales the service with the steps and idle plan of deploy/aws/autoscaling.ts', async () => {
    const { find } = await synth({ PGPT_DEPLOY_MAX_WORKERS: '6' })
    const scaling = { ...DEFAULT_SCALING, maxWorkers: 6 }
    expect(find('aws.appautoscaling.Target')[0].args).toMatchObject({ minCapacity: 0, maxCapacity: 6 })
    const steps = (name: string) =>
      (
        find('aws.appautoscaling.Policy', name)[0].args.stepScalingPolicyConfiguration as {
          stepAdjustments: unknown[]
        }
      ).stepAdjustments
    expect(steps('WorkersBusy')).toEqual(
      busySteps(scaling).map((s) => ({
        metricIntervalLowerBound: String(s.lower),
        metricIntervalUpperBound: s.upper === undefined ? undefined : String(s.upper),
        scalingAdjustment: s.capacity,
      })),
    )
    expect(steps('WorkersIdle')).toEqual([
      { metricIntervalLowerBound: undefined, metricIntervalUpperBound: '0', scalingAdjustment: 0 },
    ])
    const [idleAlarm] = find('aws.cloudwatch.MetricAlarm', 'WorkersIdleAlarm')
    expect(idleAlarm.args).toMatchObject({
      comparisonOperator: 'LessThanOrEqualToThreshold',
      evaluationPeriods: idlePlan(scaling).evaluationPeriods,
      treatMissingData: 'breaching',
    })
  })

  it('outputs the URLs; with a Cloudflare edge: no Lambda API, an access key for the Worker', async () => {
    const lambda = await synth()
    expect(lambda.outputs).toMatchObject({ bucket: expect.anything(), queue: expect.anything() })
    expect(String(lambda.outputs.api)).toBe('Api.url')
    const cf = await synth({
      PGPT_DEPLOY_EDGE: 'cloudflare',
      PGPT_DEPLOY_EDGE_URL: 'https://edge.example.com',
    })
    expect(cf.find('sst.aws.Function', 'Api')).toEqual([])
    expect(cf.outputs.edgeUrl).toBe('https://edge.example.com')
    expect(cf.find('aws.iam.AccessKey')).toHaveLength(1)
    expect(cf.outputs.edgeSecretAccessKey).toBeDefined()
  })
})
