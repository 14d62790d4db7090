/**
 * On-prem manifests: deploy/k8s/*.yaml and deploy/compose/compose.yaml parse
 * as YAML and hold what they must: a GPU per worker pod, env from the
 * ConfigMap and Secret, KEDA scaling on the same SQS queue the workers read
 * (with the rule of deploy/aws/autoscaling.ts), every setting a valid
 * core/config.ts value; compose wires MinIO, ElasticMQ, the edge and a GPU worker.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { parseConfig } from '../../core/config.js'
import { DEFAULT_SCALING, idlePlan } from '../../deploy/aws/index.js'
import { parseWorkerSettings } from '../../workers/settings.js'
import { execForm, readDockerfile } from './dockerfile.js'

const ROOT = resolve(import.meta.dirname, '../..')
const K8S = resolve(ROOT, 'deploy/k8s')

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML documents, read by path
type Doc = Record<string, any>
const docs: Doc[] = readdirSync(K8S)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(resolve(K8S, f), 'utf8')).map((d) => {
      expect(d.errors, f).toEqual([])
      return d.toJS() as Doc
    }),
  )
const byKind = (kind: string, name?: string) =>
  docs.filter((d) => d.kind === kind && (!name || d.metadata?.name === name))

describe('deploy/k8s', () => {
  const [deployment] = byKind('Deployment', 'pgpt-worker')
  const [configMap] = byKind('ConfigMap', 'pgpt-config')
  const [secret] = byKind('Secret', 'pgpt-secrets')
  const [scaled] = byKind('ScaledObject', 'pgpt-worker')
  const container = deployment?.spec.template.spec.containers[0]

  it('kustomization lists every manifest, all in one namespace', () => {
    const [k] = byKind('Kustomization')
    const files = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    expect([...k.resources].sort()).toEqual(files.sort())
    for (const d of docs.filter((x) => x.kind !== 'Kustomization' && x.kind !== 'Namespace'))
      expect(d.metadata.namespace, d.kind).toBe('prometheus-gpt')
  })

  it('the worker asks for one NVIDIA GPU and runs as the image’s non-root user', () => {
    expect(container.resources.limits['nvidia.com/gpu']).toBe(1)
    const sc = deployment.spec.template.spec.securityContext
    expect(sc.runAsNonRoot).toBe(true)
    expect(sc.runAsUser).toBe(10001)
    const { stages } = readDockerfile(resolve(ROOT, 'workers/Dockerfile'))
    expect(stages.at(-1)!.instructions.some((i) => i.op === 'RUN' && i.args.includes('--uid 10001'))).toBe(
      true,
    )
  })

  it('takes its environment from the ConfigMap and the Secret', () => {
    expect(container.envFrom).toEqual([
      { configMapRef: { name: configMap.metadata.name } },
      { secretRef: { name: secret.metadata.name } },
    ])
    expect(Object.keys(secret.stringData).sort()).toEqual([
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'PGPT_INTERNAL_TOKEN',
      'PGPT_METRICS_TOKEN',
      'PGPT_WEBHOOK_SIGNING_KEY',
    ])
    for (const k of Object.keys(secret.stringData)) expect(configMap.data[k], k).toBeUndefined()
  })

  it('ConfigMap + Secret form a valid worker configuration for the cloud adapters', () => {
    const env = { ...configMap.data, ...secret.stringData }
    const config = parseConfig(env)
    expect(config).toMatchObject({
      PGPT_PROFILE: 'onprem',
      PGPT_QUEUE: 'sqs',
      PGPT_STORE: 's3',
      PGPT_RECORDS: 'object',
    })
    expect(parseWorkerSettings(env).PGPT_WORKER_METRICS_PORT).toBe(9464)
  })

  it('probes /health on the metrics port and mounts the image’s model-cache volume', () => {
    for (const p of ['startupProbe', 'livenessProbe', 'readinessProbe'])
      expect(container[p].httpGet).toEqual({ path: '/health', port: 'metrics' })
    expect(container.ports).toEqual([
      { name: 'metrics', containerPort: Number(configMap.data.PGPT_WORKER_METRICS_PORT) },
    ])
    const { stages } = readDockerfile(resolve(ROOT, 'workers/Dockerfile'))
    const volume = execForm(stages.at(-1)!.instructions.find((i) => i.op === 'VOLUME')!.args)[0]
    expect(container.volumeMounts.map((m: Doc) => m.mountPath)).toContain(volume)
    expect(configMap.data.PGPT_MODEL_CACHE_DIR.startsWith(`${volume}/`)).toBe(true)
    // Termination grace covers the worker's drain.
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(
      Number(configMap.data.PGPT_SHUTDOWN_GRACE_S),
    )
  })

  it('runs the edge with /ready as readiness and /health as liveness, reachable at the workers’ PGPT_EDGE_URL', () => {
    const [edge] = byKind('Deployment', 'pgpt-edge')
    const [service] = byKind('Service', 'pgpt-edge')
    const c = edge.spec.template.spec.containers[0]
    expect(c.readinessProbe.httpGet).toEqual({ path: '/ready', port: 'http' })
    expect(c.livenessProbe.httpGet).toEqual({ path: '/health', port: 'http' })
    expect(c.startupProbe.httpGet).toEqual({ path: '/health', port: 'http' })
    expect(c.envFrom).toEqual(container.envFrom)
    const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.value]))
    const config = parseConfig({ ...configMap.data, ...secret.stringData, ...env })
    expect(config).toMatchObject({ HOST: '0.0.0.0', PGPT_PROFILE: 'onprem', PGPT_RECORDS: 'object' })
    expect(c.ports).toEqual([{ name: 'http', containerPort: config.PORT }])
    // The image's user; the edge image runs as `node`.
    expect(edge.spec.template.spec.securityContext.runAsNonRoot).toBe(true)
    const { stages } = readDockerfile(resolve(ROOT, 'deploy/compose/edge.Dockerfile'))
    expect(stages.at(-1)!.instructions.some((i) => i.op === 'USER' && i.args.trim() === 'node')).toBe(true)
    // Workers push events to the Service, which selects the edge pods.
    expect(service.spec.selector).toEqual(edge.spec.selector.matchLabels)
    const edgeUrl = new URL(config.PGPT_EDGE_URL!)
    expect(edgeUrl.hostname.split('.').slice(0, 2)).toEqual([
      service.metadata.name,
      service.metadata.namespace,
    ])
    expect(Number(edgeUrl.port)).toBe(service.spec.ports[0].port)
    expect(service.spec.ports[0].targetPort).toBe('http')
  })

  it('KEDA scales the worker on the queue it reads, by the rule of deploy/aws/autoscaling.ts', () => {
    expect(scaled.spec.scaleTargetRef.name).toBe(deployment.metadata.name)
    const [trigger] = scaled.spec.triggers
    expect(trigger.type).toBe('aws-sqs-queue')
    expect(trigger.metadata.queueURL).toBe(configMap.data.PGPT_SQS_QUEUE_URL)
    expect(trigger.metadata.awsRegion).toBe(configMap.data.AWS_REGION)
    expect(trigger.metadata.queueLength).toBe(String(DEFAULT_SCALING.messagesPerWorker))
    expect(trigger.metadata.scaleOnInFlight).toBe('true') // backlog = visible + in flight
    expect(scaled.spec.minReplicaCount).toBe(DEFAULT_SCALING.minWorkers)
    expect(scaled.spec.maxReplicaCount).toBe(DEFAULT_SCALING.maxWorkers)
    const idle = idlePlan(DEFAULT_SCALING)
    expect(scaled.spec.cooldownPeriod).toBe(idle.evaluationPeriods * idle.periodSeconds)
    const [auth] = byKind('TriggerAuthentication', trigger.authenticationRef.name)
    for (const ref of auth.spec.secretTargetRef) {
      expect(ref.name).toBe(secret.metadata.name)
      expect(secret.stringData[ref.key]).toBeDefined()
    }
  })
})

describe('deploy/compose/compose.yaml', () => {
  const file = resolve(ROOT, 'deploy/compose/compose.yaml')
  const compose = parseYaml(readFileSync(file, 'utf8'), { merge: true }) as Doc
  const example = Object.fromEntries(
    readFileSync(resolve(ROOT, 'deploy/compose/example.env'), 'utf8')
      .split('\n')
      .filter((l) => /^\w+=/.test(l))
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  )
  /** Compose interpolation of ${VAR:-default} and ${VAR:?error} from example.env. */
  const interpolate = (env: Record<string, string>) =>
    Object.fromEntries(
      Object.entries(env).map(([k, v]) => [
        k,
        String(v).replace(
          /\$\{(\w+)(?::[-?]([^}]*))?\}/g,
          (_, name: string, def?: string) => example[name] ?? def ?? '',
        ),
      ]),
    )

  it('runs MinIO, ElasticMQ, the edge and a GPU worker', () => {
    expect(Object.keys(compose.services).sort()).toEqual([
      'edge',
      'elasticmq',
      'minio',
      'minio-init',
      'worker',
    ])
    expect(compose.services.worker.deploy.resources.reservations.devices).toEqual([
      { driver: 'nvidia', count: 1, capabilities: ['gpu'] },
    ])
    expect(compose.services.worker.build).toEqual({ context: '../..', dockerfile: 'workers/Dockerfile' })
    const { stages } = readDockerfile(resolve(ROOT, 'workers/Dockerfile'))
    const volume = execForm(stages.at(-1)!.instructions.find((i) => i.op === 'VOLUME')!.args)[0]
    expect(compose.services.worker.volumes).toEqual([`model-cache:${volume}`])
  })

  it('edge and worker configurations are valid and point at the compose services', () => {
    const worker = interpolate(compose.services.worker.environment)
    const edge = interpolate(compose.services.edge.environment)
    const wc = parseConfig(worker)
    const ec = parseConfig(edge)
    for (const c of [wc, ec]) {
      expect(c).toMatchObject({
        PGPT_QUEUE: 'sqs',
        PGPT_STORE: 's3',
        PGPT_RECORDS: 'object',
        PGPT_S3_FORCE_PATH_STYLE: true,
      })
      expect(new URL(c.PGPT_SQS_ENDPOINT!).hostname).toBe('elasticmq')
      expect(new URL(c.PGPT_S3_ENDPOINT!).hostname).toBe('minio')
    }
    expect(wc.PGPT_SQS_QUEUE_URL).toBe(ec.PGPT_SQS_QUEUE_URL)
    expect(new URL(wc.PGPT_EDGE_URL!).hostname).toBe('edge')
    expect(new URL(wc.PGPT_EDGE_URL!).port).toBe(String(ec.PORT))
    expect(wc.PGPT_WEBHOOK_SIGNING_KEY).toBeDefined()
    expect(worker.AWS_SECRET_ACCESS_KEY).toBe(example.MINIO_ROOT_PASSWORD)
  })

  it('ElasticMQ defines the queue and its DLQ with the configured redrive', () => {
    const conf = readFileSync(resolve(ROOT, 'deploy/compose/elasticmq.conf'), 'utf8')
    const worker = interpolate(compose.services.worker.environment)
    const queue = worker.PGPT_SQS_QUEUE_URL.split('/').at(-1)
    const dlq = worker.PGPT_SQS_DLQ_URL.split('/').at(-1)
    expect(conf).toMatch(
      new RegExp(
        `\\n  ${queue} \\{[^}]*deadLettersQueue \\{\\s*name = "${dlq}"\\s*maxReceiveCount = ${worker.PGPT_MAX_RECEIVE_COUNT}`,
      ),
    )
    expect(conf).toMatch(new RegExp(`\\n  ${dlq} \\{`))
    expect(compose.services.elasticmq.volumes[0]).toMatch(/^\.\/elasticmq\.conf:\/opt\/elasticmq\.conf/)
  })
})
