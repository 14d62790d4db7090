/**
 * Autoscaling of the GPU workers on queue depth (sst.config.ts; the KEDA
 * ScaledObject in deploy/k8s/ follows the same rule).
 *
 * The rule: backlog = visible + in-flight messages of the jobs queue (running
 * jobs count: a busy worker is not idle). With backlog b > 0 we want
 * ceil(b / messagesPerWorker) workers, within [max(1, min), max]; with no
 * backlog for `idleMinutes`, `minWorkers` (0: scale to zero).
 *
 * On ECS this is two CloudWatch alarms on one metric-math expression, each
 * driving an Application Auto Scaling step policy of type ExactCapacity:
 * - scale-out/in while busy: alarm `backlog > 0`, steps map backlog ranges to
 *   exact worker counts (`busySteps`). Step bounds are relative to the
 *   threshold (0); lower bound inclusive, upper exclusive; a policy holds at
 *   most 20 steps, so above 20 workers each step covers several counts and
 *   rounds up.
 * - scale to zero: alarm `backlog <= 0` for `idleMinutes` consecutive periods
 *   (missing data counts as idle: SQS stops sending metrics for an empty,
 *   inactive queue) → exact capacity `minWorkers`.
 * SQS metrics arrive once a minute, so a queue that wakes from zero waits a
 * minute or more before the first worker is asked for (plus instance start).
 */

export interface ScalingOptions {
  /** Queued + running messages one worker is expected to absorb (its concurrency, roughly). */
  messagesPerWorker: number
  /** Workers kept with no backlog; 0 scales to zero. */
  minWorkers: number
  maxWorkers: number
  /** Minutes with no backlog before scaling to minWorkers. */
  idleMinutes: number
  /** Metric period, seconds. Default 60 (SQS publishes every minute). */
  periodSeconds?: number
}

/** Defaults of deploy/aws and deploy/k8s: 8 messages per worker (PGPT_WORKER_CONCURRENCY 4, doubled), 0 to 4 workers, 15 idle minutes. */
export const DEFAULT_SCALING: ScalingOptions = {
  messagesPerWorker: 8,
  minWorkers: 0,
  maxWorkers: 4,
  idleMinutes: 15,
}

export const MAX_STEPS = 20

export function checkScaling(o: ScalingOptions): Required<ScalingOptions> {
  const period = o.periodSeconds ?? 60
  if (!Number.isInteger(o.messagesPerWorker) || o.messagesPerWorker < 1)
    throw new Error('messagesPerWorker must be an integer >= 1')
  if (!Number.isInteger(o.minWorkers) || o.minWorkers < 0)
    throw new Error('minWorkers must be an integer >= 0')
  if (!Number.isInteger(o.maxWorkers) || o.maxWorkers < Math.max(1, o.minWorkers))
    throw new Error('maxWorkers must be an integer >= max(1, minWorkers)')
  if (!(o.idleMinutes > 0)) throw new Error('idleMinutes must be > 0')
  if (![10, 30].includes(period) && (period < 60 || period % 60 !== 0))
    throw new Error('periodSeconds must be 10, 30 or a multiple of 60 (CloudWatch)')
  return { ...o, periodSeconds: period }
}

/** Workers wanted for a backlog (visible + in-flight messages) while busy. */
export function desiredWorkers(backlog: number, o: ScalingOptions): number {
  checkScaling(o)
  if (backlog <= 0) return o.minWorkers
  const want = Math.ceil(backlog / o.messagesPerWorker)
  return Math.min(o.maxWorkers, Math.max(want, o.minWorkers, 1))
}

/** One step of an ExactCapacity step policy; bounds relative to the alarm threshold (0). */
export interface Step {
  lower: number
  /** Undefined: no upper bound. */
  upper?: number
  capacity: number
}

/**
 * Steps of the busy policy (alarm `backlog > 0`). Step i sets capacity c_i for
 * backlogs with ceil(b / m) in (c_{i-1}, c_i]: b in [c_{i-1}·m + 1, c_i·m + 1).
 * The first step starts at 0, the last has no upper bound.
 */
export function busySteps(o: ScalingOptions): Step[] {
  checkScaling(o)
  const lowest = Math.max(1, o.minWorkers)
  const counts = o.maxWorkers - lowest + 1
  const k = Math.min(counts, MAX_STEPS)
  const caps = Array.from({ length: k }, (_, i) => lowest - 1 + Math.round(((i + 1) * counts) / k))
  const m = o.messagesPerWorker
  return caps.map((capacity, i) => {
    const lower = i === 0 ? 0 : caps[i - 1] * m + 1
    const step: Step = { lower, capacity }
    if (i < k - 1) step.upper = capacity * m + 1
    return step
  })
}

/** The capacity a step policy sets for a metric value above the threshold (what AWS does with the steps). */
export function stepCapacity(steps: Step[], value: number): number | undefined {
  return steps.find((s) => value >= s.lower && (s.upper === undefined || value < s.upper))?.capacity
}

export interface IdlePlan {
  /** Consecutive periods with backlog <= 0 before the alarm fires. */
  evaluationPeriods: number
  periodSeconds: number
  capacity: number
  /** SQS stops publishing metrics for an idle queue: missing data is idle. */
  treatMissingData: 'breaching'
}

export function idlePlan(o: ScalingOptions): IdlePlan {
  const c = checkScaling(o)
  return {
    evaluationPeriods: Math.max(1, Math.ceil((c.idleMinutes * 60) / c.periodSeconds)),
    periodSeconds: c.periodSeconds,
    capacity: c.minWorkers,
    treatMissingData: 'breaching',
  }
}

/** CloudWatch metric-math queries for the backlog of one queue (aws.cloudwatch.MetricAlarm metricQueries). */
export function backlogQueries(queueName: string, periodSeconds = 60) {
  const metric = (id: string, metricName: string) => ({
    id,
    returnData: false,
    metric: {
      namespace: 'AWS/SQS',
      metricName,
      dimensions: { QueueName: queueName },
      period: periodSeconds,
      stat: 'Maximum',
    },
  })
  return [
    metric('visible', 'ApproximateNumberOfMessagesVisible'),
    metric('inflight', 'ApproximateNumberOfMessagesNotVisible'),
    { id: 'backlog', expression: 'visible + inflight', label: 'jobs backlog', returnData: true },
  ]
}
