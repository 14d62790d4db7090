/// <reference path="./.sst/platform/config.d.ts" />
/**
 * The AWS stack (SST v3 config format, run by the `sst` CLI 3.x/4.x): the jobs
 * queue with its dead-letter queue, the bucket (models, files, results and, with
 * PGPT_RECORDS=object, job records, keys and usage), the API on Lambda, the
 * dead-letter and cleanup functions, and the GPU workers on ECS with EC2 GPU
 * capacity, autoscaled on queue depth down to zero. See docs/deploy.md.
 *
 *   npx sst@4 secret set InternalToken …; npx sst@4 deploy --stage dev
 *
 * The decisions are plain functions in deploy/aws/ (names per stage, queue
 * plan, scaling steps, deploy settings), tested in test/deploy/aws.test.ts.
 * This file is only wiring. It is excluded from `tsc` (tsconfig.json): its
 * globals ($config, sst, aws, $interpolate, …) are typed by
 * `.sst/platform/config.d.ts`, which `sst install` generates by downloading
 * the Pulumi providers; the `sst` npm package does not contain them.
 * SST requires imports inside run(), hence the dynamic import.
 */

export default $config({
  app(input) {
    return {
      name: 'prometheus-gpt',
      removal: input?.stage === 'production' ? 'retain' : 'remove',
      protect: input?.stage === 'production',
      home: 'aws',
    }
  },

  async run() {
    const {
      backlogQueries,
      busySteps,
      checkStage,
      deploySettings,
      idlePlan,
      isProduction,
      planQueues,
      queueNames,
      resourceName,
      seconds,
    } = await import('./deploy/aws/index.js')

    const stage = checkStage($app.stage)
    const settings = deploySettings(process.env)
    const { scaling } = settings
    // Same values the services read (core/config.ts defaults): the redrive fires after the count in the workers' reason text.
    const plan = planQueues({ visibilityTimeoutS: 60, maxReceiveCount: 5 })
    const names = queueNames(stage)
    const region = aws.getRegionOutput().name

    // Secrets: `npx sst secret set <Name> <value> --stage <stage>`.
    const internalToken = new sst.Secret('InternalToken') // worker → edge events channel, 16+ characters
    const webhookSigningKey = new sst.Secret('WebhookSigningKey') // 32+ characters
    const metricsToken = new sst.Secret('MetricsToken') // bearer of /metrics, 8+ characters

    // --- queue, dead-letter queue, bucket -------------------------------------------------
    const bucket = new sst.aws.Bucket('Store')
    const dlq = new sst.aws.Queue('JobsDlq', {
      visibilityTimeout: seconds(plan.deadLetter.visibilityTimeoutS),
      transform: { queue: { name: names.deadLetter, messageRetentionSeconds: plan.deadLetter.retentionS } },
    })
    const queue = new sst.aws.Queue('Jobs', {
      visibilityTimeout: seconds(plan.queue.visibilityTimeoutS),
      dlq: { queue: dlq.arn, retry: plan.queue.maxReceiveCount },
      transform: { queue: { name: names.queue, messageRetentionSeconds: plan.queue.retentionS } },
    })

    /** Runtime configuration shared by every service (core/config.ts names). */
    const shared = {
      PGPT_PROFILE: 'aws',
      PGPT_LOG_LEVEL: 'info',
      PGPT_QUEUE: 'sqs',
      PGPT_SQS_QUEUE_URL: queue.url,
      PGPT_SQS_DLQ_URL: dlq.url,
      PGPT_STORE: 's3',
      PGPT_S3_BUCKET: bucket.name,
      PGPT_RECORDS: 'object',
      PGPT_VISIBILITY_TIMEOUT_S: String(plan.queue.visibilityTimeoutS),
      PGPT_MAX_RECEIVE_COUNT: String(plan.queue.maxReceiveCount),
    }

    // --- functions ---------------------------------------------------------------------------
    const api =
      settings.edge === 'lambda'
        ? new sst.aws.Function('Api', {
            handler: 'functions/api.handler', // hono/aws-lambda over edge/app.ts
            runtime: 'nodejs22.x',
            memory: '1024 MB',
            timeout: '5 minutes', // a synchronous completion waits for its job
            url: true,
            link: [queue, bucket],
            environment: {
              ...shared,
              PGPT_INTERNAL_TOKEN: internalToken.value,
              PGPT_METRICS_TOKEN: metricsToken.value,
            },
          })
        : undefined
    const edgeUrl = api ? api.url : settings.edgeUrl!

    dlq.subscribe(
      {
        handler: 'functions/dead-letter.handler',
        runtime: 'nodejs22.x',
        timeout: seconds(plan.deadLetterFunctionTimeoutS),
        link: [bucket, dlq],
        environment: {
          ...shared,
          PGPT_EDGE_URL: edgeUrl,
          PGPT_INTERNAL_TOKEN: internalToken.value,
          // Signs dead-lettered jobs' `failed` webhooks (functions/dead-letter.ts sends them).
          PGPT_WEBHOOK_SIGNING_KEY: webhookSigningKey.value,
        },
      },
      { batch: { size: 10, partialResponses: true } },
    )

    new sst.aws.Cron('Cleanup', {
      schedule: 'rate(1 hour)',
      function: {
        handler: 'functions/cleanup.handler',
        runtime: 'nodejs22.x',
        timeout: '5 minutes',
        link: [bucket],
        environment: shared,
      },
    })

    // --- GPU workers: ECS on EC2 GPU instances -------------------------------------------------
    const vpc = new sst.aws.Vpc('Vpc', { nat: 'ec2' }) // workers need outbound HTTPS only
    const repo = new aws.ecr.Repository('WorkerRepo', {
      name: resourceName(stage, 'worker'),
      forceDelete: !isProduction(stage),
      imageScanningConfiguration: { scanOnPush: true },
    })
    const image = settings.workerImage ?? $interpolate`${repo.repositoryUrl}:latest`

    const cluster = new aws.ecs.Cluster('Cluster', {
      name: resourceName(stage, 'cluster'),
      settings: [{ name: 'containerInsights', value: 'enabled' }],
    })

    const assume = (service: string) =>
      JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Principal: { Service: service }, Action: 'sts:AssumeRole' }],
      })
    const instanceRole = new aws.iam.Role('WorkerInstanceRole', {
      assumeRolePolicy: assume('ec2.amazonaws.com'),
    })
    for (const [name, arn] of [
      ['Ecs', 'arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role'],
      ['Ssm', 'arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore'],
    ])
      new aws.iam.RolePolicyAttachment(`WorkerInstance${name}`, { role: instanceRole.name, policyArn: arn })
    const instanceProfile = new aws.iam.InstanceProfile('WorkerInstanceProfile', { role: instanceRole.name })

    const launchTemplate = new aws.ec2.LaunchTemplate('WorkerLaunchTemplate', {
      imageId: aws.ssm.getParameterOutput({ name: settings.amiParameter }).value,
      instanceType: settings.instanceType,
      iamInstanceProfile: { arn: instanceProfile.arn },
      vpcSecurityGroupIds: vpc.securityGroups,
      metadataOptions: { httpTokens: 'required' },
      blockDeviceMappings: [{ deviceName: '/dev/xvda', ebs: { volumeSize: 100, volumeType: 'gp3' } }],
      userData: cluster.name.apply((name) =>
        Buffer.from(
          `#!/bin/bash\necho ECS_CLUSTER=${name} >> /etc/ecs/ecs.config\necho ECS_ENABLE_GPU_SUPPORT=true >> /etc/ecs/ecs.config\n`,
        ).toString('base64'),
      ),
    })
    const instances = new aws.autoscaling.Group(
      'WorkerInstances',
      {
        minSize: 0,
        maxSize: scaling.maxWorkers,
        vpcZoneIdentifiers: vpc.privateSubnets,
        launchTemplate: { id: launchTemplate.id, version: '$Latest' },
        protectFromScaleIn: true, // the capacity provider decides which instance may go
        tags: [{ key: 'AmazonECSManaged', value: 'true', propagateAtLaunch: true }],
      },
      { ignoreChanges: ['desiredCapacity'] },
    )
    const capacity = new aws.ecs.CapacityProvider('WorkerCapacity', {
      name: resourceName(stage, 'gpu'),
      autoScalingGroupProvider: {
        autoScalingGroupArn: instances.arn,
        managedTerminationProtection: 'ENABLED',
        managedScaling: { status: 'ENABLED', targetCapacity: 100 },
      },
    })
    new aws.ecs.ClusterCapacityProviders('ClusterCapacity', {
      clusterName: cluster.name,
      capacityProviders: [capacity.name],
    })

    // Secrets reach the container from SSM, never as plain task-definition values.
    const secret = (name: string, value: $util.Input<string>) =>
      new aws.ssm.Parameter(`Worker${name}`, {
        name: `/${resourceName(stage, 'worker')}/${name}`,
        type: 'SecureString',
        value,
      })
    const secrets = {
      PGPT_INTERNAL_TOKEN: secret('InternalToken', internalToken.value),
      PGPT_WEBHOOK_SIGNING_KEY: secret('WebhookSigningKey', webhookSigningKey.value),
      PGPT_METRICS_TOKEN: secret('MetricsToken', metricsToken.value),
    }

    const executionRole = new aws.iam.Role('WorkerExecutionRole', {
      assumeRolePolicy: assume('ecs-tasks.amazonaws.com'),
    })
    new aws.iam.RolePolicyAttachment('WorkerExecution', {
      role: executionRole.name,
      policyArn: 'arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy',
    })
    new aws.iam.RolePolicy('WorkerExecutionSecrets', {
      role: executionRole.id,
      policy: $jsonStringify({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Action: ['ssm:GetParameters'],
            Resource: Object.values(secrets).map((p) => p.arn),
          },
        ],
      }),
    })
    const taskRole = new aws.iam.Role('WorkerTaskRole', {
      assumeRolePolicy: assume('ecs-tasks.amazonaws.com'),
    })
    new aws.iam.RolePolicy('WorkerTaskAccess', {
      role: taskRole.id,
      policy: $jsonStringify({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Action: [
              'sqs:ReceiveMessage',
              'sqs:DeleteMessage',
              'sqs:ChangeMessageVisibility',
              'sqs:GetQueueAttributes',
              'sqs:SendMessage',
            ],
            Resource: [queue.arn, dlq.arn],
          },
          {
            Effect: 'Allow',
            Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
            Resource: [$interpolate`${bucket.arn}/*`],
          },
          { Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [bucket.arn] },
        ],
      }),
    })

    const logGroup = new aws.cloudwatch.LogGroup('WorkerLogs', {
      name: `/${resourceName(stage, 'worker')}`,
      retentionInDays: 30,
    })
    const workerEnv = {
      ...shared,
      AWS_REGION: region,
      PGPT_EDGE_URL: edgeUrl,
      PGPT_EXECUTION_PROVIDERS: 'tensorrt,cuda,cpu',
      PGPT_MODEL_CACHE_DIR: '/var/cache/pgpt/models',
      PGPT_WORKER_METRICS_PORT: '9464',
      PGPT_WORKER_METRICS_HOST: '0.0.0.0',
      PGPT_DEAD_LETTER_INTERVAL_S: '0', // functions/dead-letter.ts drains the DLQ
    }
    const task = new aws.ecs.TaskDefinition('WorkerTask', {
      family: resourceName(stage, 'worker'),
      requiresCompatibilities: ['EC2'],
      networkMode: 'awsvpc',
      executionRoleArn: executionRole.arn,
      taskRoleArn: taskRole.arn,
      volumes: [{ name: 'model-cache', hostPath: '/var/cache/pgpt' }],
      containerDefinitions: $jsonStringify([
        {
          name: 'worker',
          image,
          essential: true,
          memoryReservation: 8192,
          resourceRequirements: [{ type: 'GPU', value: '1' }],
          environment: Object.entries(workerEnv).map(([name, value]) => ({ name, value })),
          secrets: Object.entries(secrets).map(([name, p]) => ({ name, valueFrom: p.arn })),
          mountPoints: [{ sourceVolume: 'model-cache', containerPath: '/var/cache/pgpt' }],
          // SIGTERM, then PGPT_SHUTDOWN_GRACE_S (25) for in-flight jobs, then SIGKILL.
          stopTimeout: 60,
          // ECS ignores the image's HEALTHCHECK; the same probe as workers/Dockerfile.
          healthCheck: {
            command: [
              'CMD',
              'node',
              '-e',
              "fetch('http://127.0.0.1:'+process.env.PGPT_WORKER_METRICS_PORT+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))",
            ],
            interval: 30,
            timeout: 5,
            retries: 3,
            startPeriod: 120,
          },
          logConfiguration: {
            logDriver: 'awslogs',
            options: {
              'awslogs-group': logGroup.name,
              'awslogs-region': region,
              'awslogs-stream-prefix': 'worker',
            },
          },
        },
      ]),
    })

    const service = new aws.ecs.Service(
      'Workers',
      {
        name: resourceName(stage, 'workers'),
        cluster: cluster.arn,
        taskDefinition: task.arn,
        desiredCount: scaling.minWorkers,
        capacityProviderStrategies: [{ capacityProvider: capacity.name, weight: 1 }],
        networkConfiguration: { subnets: vpc.privateSubnets, securityGroups: vpc.securityGroups },
        // One GPU per task and no spare instance: a deploy stops old tasks first (jobs wait in the queue).
        deploymentMinimumHealthyPercent: 0,
        deploymentMaximumPercent: 100,
      },
      { ignoreChanges: ['desiredCount'] }, // the scaling policies own it
    )

    // --- autoscaling on queue depth (deploy/aws/autoscaling.ts) ---------------------------
    const target = new aws.appautoscaling.Target('WorkersScaling', {
      serviceNamespace: 'ecs',
      scalableDimension: 'ecs:service:DesiredCount',
      resourceId: $interpolate`service/${cluster.name}/${service.name}`,
      minCapacity: scaling.minWorkers,
      maxCapacity: scaling.maxWorkers,
    })
    const policy = (name: string, steps: Array<{ lower?: number; upper?: number; capacity: number }>) =>
      new aws.appautoscaling.Policy(name, {
        policyType: 'StepScaling',
        resourceId: target.resourceId,
        scalableDimension: target.scalableDimension,
        serviceNamespace: target.serviceNamespace,
        stepScalingPolicyConfiguration: {
          adjustmentType: 'ExactCapacity',
          cooldown: 60,
          metricAggregationType: 'Maximum',
          stepAdjustments: steps.map((s) => ({
            metricIntervalLowerBound: s.lower === undefined ? undefined : String(s.lower),
            metricIntervalUpperBound: s.upper === undefined ? undefined : String(s.upper),
            scalingAdjustment: s.capacity,
          })),
        },
      })
    const busy = policy('WorkersBusy', busySteps(scaling))
    new aws.cloudwatch.MetricAlarm('WorkersBusyAlarm', {
      comparisonOperator: 'GreaterThanThreshold',
      threshold: 0,
      evaluationPeriods: 1,
      metricQueries: backlogQueries(names.queue),
      treatMissingData: 'notBreaching',
      alarmActions: [busy.arn],
    })
    const idle = idlePlan(scaling)
    const toMin = policy('WorkersIdle', [{ upper: 0, capacity: idle.capacity }])
    new aws.cloudwatch.MetricAlarm('WorkersIdleAlarm', {
      comparisonOperator: 'LessThanOrEqualToThreshold',
      threshold: 0,
      evaluationPeriods: idle.evaluationPeriods,
      datapointsToAlarm: idle.evaluationPeriods,
      metricQueries: backlogQueries(names.queue, idle.periodSeconds),
      treatMissingData: idle.treatMissingData,
      alarmActions: [toMin.arn],
    })

    // --- credentials of a Cloudflare edge (PGPT_DEPLOY_EDGE=cloudflare) ---------------------
    let edgeCredentials:
      | { accessKeyId: $util.Output<string>; secretAccessKey: $util.Output<string> }
      | undefined
    if (settings.edge === 'cloudflare') {
      const user = new aws.iam.User('EdgeUser', { name: resourceName(stage, 'edge') })
      new aws.iam.UserPolicy('EdgeAccess', {
        user: user.name,
        policy: $jsonStringify({
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Action: ['sqs:SendMessage', 'sqs:GetQueueAttributes'], Resource: [queue.arn] },
            {
              Effect: 'Allow',
              Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
              Resource: [$interpolate`${bucket.arn}/*`],
            },
            { Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [bucket.arn] },
          ],
        }),
      })
      const key = new aws.iam.AccessKey('EdgeKey', { user: user.name })
      edgeCredentials = { accessKeyId: key.id, secretAccessKey: $util.secret(key.secret) }
    }

    return {
      api: api?.url,
      edgeUrl,
      bucket: bucket.name,
      queue: queue.url,
      deadLetterQueue: dlq.url,
      workerRepository: repo.repositoryUrl,
      cluster: cluster.name,
      workers: service.name,
      ...(edgeCredentials
        ? {
            edgeAccessKeyId: edgeCredentials.accessKeyId,
            edgeSecretAccessKey: edgeCredentials.secretAccessKey,
          }
        : {}),
    }
  },
})
