/** The plain functions sst.config.ts builds the AWS stack from: names, queues, autoscaling, deploy settings. */
import { describe, expect, it } from 'vitest'
import {
  backlogQueries,
  busySteps,
  checkStage,
  DEFAULT_AMI_PARAMETER,
  DEFAULT_SCALING,
  deploySettings,
  desiredWorkers,
  idlePlan,
  MAX_STEPS,
  planQueues,
  queueNames,
  removalPolicy,
  resourceName,
  type ScalingOptions,
  stepCapacity,
} from '../../deploy/aws/index.js'

describe('names', () => {
  it('puts the app and the stage in every name', () => {
    expect(queueNames('dev')).toEqual({
      queue: 'prometheus-gpt-dev-jobs',
      deadLetter: 'prometheus-gpt-dev-jobs-dlq',
    })
    expect(queueNames('pr-42').queue).not.toBe(queueNames('pr-43').queue)
    expect(resourceName('production', 'workers')).toBe('prometheus-gpt-production-workers')
  })

  it.each(['', 'Dev', 'a_b', '-dev', 'dev-', 'x'.repeat(25), 'a/b'])('refuses the stage %j', (stage) => {
    expect(() => checkStage(stage)).toThrow(/stage/)
  })

  it('keeps production data on removal, deletes other stages', () => {
    expect(removalPolicy('production')).toBe('retain')
    expect(removalPolicy('dev')).toBe('remove')
  })

  it('every stage name accepted yields SQS-valid queue names', () => {
    const longest = 'a'.repeat(24)
    for (const n of Object.values(queueNames(longest))) {
      expect(n.length).toBeLessThanOrEqual(80)
      expect(n).toMatch(/^[A-Za-z0-9_-]+$/)
    }
  })
})

describe('queues', () => {
  it('redrives after the receive count the workers use, DLQ keeps messages longer', () => {
    const plan = planQueues({ visibilityTimeoutS: 60, maxReceiveCount: 5 })
    expect(plan.queue).toEqual({ visibilityTimeoutS: 60, retentionS: 4 * 86_400, maxReceiveCount: 5 })
    expect(plan.deadLetter.retentionS).toBe(14 * 86_400)
    expect(plan.deadLetter.retentionS).toBeGreaterThan(plan.queue.retentionS)
    // AWS: a queue feeding a Lambda has a visibility timeout >= 6 x the function timeout.
    expect(plan.deadLetter.visibilityTimeoutS).toBe(6 * plan.deadLetterFunctionTimeoutS)
  })

  it.each([
    [{ visibilityTimeoutS: 60, maxReceiveCount: 0 }, /maxReceiveCount/],
    [{ visibilityTimeoutS: 50_000, maxReceiveCount: 5 }, /visibilityTimeoutS/],
    [{ visibilityTimeoutS: 60, maxReceiveCount: 5, retentionS: 14 * 86_400 }, /less than the DLQ/],
    [
      { visibilityTimeoutS: 60, maxReceiveCount: 5, deadLetterFunctionTimeoutS: 901 },
      /deadLetterFunctionTimeoutS/,
    ],
  ])('refuses %j', (settings, err) => {
    expect(() => planQueues(settings)).toThrow(err)
  })
})

describe('autoscaling', () => {
  const o: ScalingOptions = { messagesPerWorker: 8, minWorkers: 0, maxWorkers: 4, idleMinutes: 15 }

  it('wants one worker per messagesPerWorker of backlog, rounding up, within the bounds', () => {
    expect([0, 1, 8, 9, 16, 17, 32, 33, 1000].map((b) => desiredWorkers(b, o))).toEqual([
      0, 1, 1, 2, 2, 3, 4, 4, 4,
    ])
    expect(desiredWorkers(0, { ...o, minWorkers: 2 })).toBe(2)
    expect(desiredWorkers(3, { ...o, minWorkers: 2 })).toBe(2)
    expect(desiredWorkers(20, { ...o, minWorkers: 2 })).toBe(3)
  })

  it('the busy steps give exactly the desired workers for every backlog (up to 20 workers)', () => {
    for (const opts of [
      o,
      { ...o, minWorkers: 1 },
      { ...o, minWorkers: 2, maxWorkers: 7, messagesPerWorker: 3 },
      { ...o, maxWorkers: 20 },
    ]) {
      const steps = busySteps(opts)
      expect(steps[0].lower).toBe(0)
      expect(steps.at(-1)?.upper).toBeUndefined()
      for (let i = 1; i < steps.length; i++) expect(steps[i].lower).toBe(steps[i - 1].upper) // no gap, no overlap
      for (let b = 1; b <= opts.maxWorkers * opts.messagesPerWorker + 50; b++)
        expect(stepCapacity(steps, b), `backlog ${b}`).toBe(desiredWorkers(b, opts))
    }
  })

  it('above 20 workers: at most 20 steps, never fewer workers than desired, at most one step coarser', () => {
    const big = { ...o, maxWorkers: 100, messagesPerWorker: 4 }
    const steps = busySteps(big)
    expect(steps).toHaveLength(MAX_STEPS)
    expect(steps.at(-1)?.capacity).toBe(100)
    for (let b = 1; b <= 500; b++) {
      const got = stepCapacity(steps, b)!
      const want = desiredWorkers(b, big)
      expect(got).toBeGreaterThanOrEqual(want)
      expect(got - want).toBeLessThan(100 / MAX_STEPS)
    }
  })

  it('scales to zero after idleMinutes of empty queue; missing metrics count as idle', () => {
    expect(idlePlan(o)).toEqual({
      evaluationPeriods: 15,
      periodSeconds: 60,
      capacity: 0,
      treatMissingData: 'breaching',
    })
    expect(idlePlan({ ...o, idleMinutes: 1, periodSeconds: 30, minWorkers: 1 })).toMatchObject({
      evaluationPeriods: 2,
      capacity: 1,
    })
  })

  it('measures the backlog as visible + in-flight messages of the queue', () => {
    const q = backlogQueries('prometheus-gpt-dev-jobs')
    expect(q.map((x) => x.id)).toEqual(['visible', 'inflight', 'backlog'])
    expect(q[2]).toMatchObject({ expression: 'visible + inflight', returnData: true })
    expect(q[1]).toMatchObject({
      metric: {
        metricName: 'ApproximateNumberOfMessagesNotVisible',
        dimensions: { QueueName: 'prometheus-gpt-dev-jobs' },
      },
    })
  })

  it.each([
    [{ messagesPerWorker: 0 }, /messagesPerWorker/],
    [{ maxWorkers: 0 }, /maxWorkers/],
    [{ minWorkers: 5, maxWorkers: 4 }, /maxWorkers/],
    [{ idleMinutes: 0 }, /idleMinutes/],
    [{ periodSeconds: 45 }, /periodSeconds/],
  ])('refuses %j', (bad, err) => {
    expect(() => busySteps({ ...o, ...bad })).toThrow(err)
  })
})

describe('deploy settings', () => {
  it('defaults: g5.xlarge, the default scaling, the ECS GPU AMI', () => {
    expect(deploySettings({})).toEqual({
      instanceType: 'g5.xlarge',
      scaling: DEFAULT_SCALING,
      amiParameter: DEFAULT_AMI_PARAMETER,
      edge: 'lambda',
    })
  })

  it('reads the instance family, size, bounds and image', () => {
    const s = deploySettings({
      PGPT_DEPLOY_GPU_FAMILY: 'g6e',
      PGPT_DEPLOY_GPU_SIZE: '12xlarge',
      PGPT_DEPLOY_MAX_WORKERS: '10',
      PGPT_DEPLOY_MIN_WORKERS: '1',
      PGPT_DEPLOY_IDLE_MINUTES: '5',
      PGPT_DEPLOY_WORKER_IMAGE: '123.dkr.ecr.us-east-1.amazonaws.com/pgpt-worker:abc',
    })
    expect(s.instanceType).toBe('g6e.12xlarge')
    expect(s.scaling).toEqual({ minWorkers: 1, maxWorkers: 10, messagesPerWorker: 8, idleMinutes: 5 })
    expect(s.workerImage).toMatch(/pgpt-worker:abc$/)
    expect(
      deploySettings({ PGPT_DEPLOY_EDGE: 'cloudflare', PGPT_DEPLOY_EDGE_URL: 'https://api.example.com' }),
    ).toMatchObject({
      edge: 'cloudflare',
      edgeUrl: 'https://api.example.com',
    })
  })

  it.each([
    [{ PGPT_DEPLOY_GPU_FAMILY: 'g5g' }, /PGPT_DEPLOY_GPU_FAMILY/],
    [{ PGPT_DEPLOY_GPU_FAMILY: 'm5' }, /PGPT_DEPLOY_GPU_FAMILY/],
    [{ PGPT_DEPLOY_GPU_SIZE: 'huge' }, /PGPT_DEPLOY_GPU_SIZE/],
    [{ PGPT_DEPLOY_MAX_WORKERS: 'two' }, /PGPT_DEPLOY_MAX_WORKERS/],
    [{ PGPT_DEPLOY_MIN_WORKERS: '3', PGPT_DEPLOY_MAX_WORKERS: '2' }, /PGPT_DEPLOY_MAX_WORKERS/],
    [{ PGPT_DEPLOY_EDGE: 'fly' }, /PGPT_DEPLOY_EDGE/],
    [{ PGPT_DEPLOY_EDGE: 'cloudflare' }, /PGPT_DEPLOY_EDGE_URL/],
  ])('refuses %j naming the variable', (env, err) => {
    expect(() => deploySettings(env)).toThrow(err)
  })
})
