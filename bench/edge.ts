/**
 * Edge overhead with autocannon: how fast the edge answers a cached
 * generation, and what authentication + rate limiting cost per request.
 *
 *   npx tsx bench/edge.ts [--seconds 5] [--connections 32] [--rounds 2]
 *
 * The server runs in a child process (this file with --serve): createApp on
 * @hono/node-server over in-memory adapters, the echo worker test double
 * answering the one cache-filling job. Workloads, each `--seconds` long, run
 * in interleaved rounds (best kept, as the CPU may be shared):
 *   health:  GET /health — no auth, no rate limit (the framework floor);
 *   models:  GET /v1/models — API key (SHA-256 + lookup) + 2 GCRA decisions + catalog;
 *   cached:  POST /v1/chat/completions, temperature 0 — key, limits, zod
 *            validation, token count, canonical hash, cache HIT.
 * Each workload's cost is the server process's CPU time (user + system) per
 * request, which a busy machine inflates far less than req/s; overhead is
 * the difference to /health. The round with the least CPU per request is kept.
 *
 *   npx tsx bench/edge.ts --observability [--seconds 5] [--rounds 3]
 *
 * compares the cache-hit path of four servers side by side, interleaved:
 * metrics and usage recording as shipped (prom-client, SQLite usage
 * records), without metrics, without usage, and with both replaced by
 * no-ops, and prints the cost of observability as a share of cache-hit
 * throughput and server CPU. On a shared machine its noise (±10%) is larger
 * than the cost; bench/observability.ts counts instructions instead.
 */
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { CHAT, noopMetrics, noopUsage } from './observability.js'

/** The part of autocannon's API used here (it ships no types). */
interface CannonOptions {
  url: string
  method?: string
  headers?: Record<string, string>
  body?: string
  duration?: number
  connections?: number
}
interface CannonResult {
  requests: { average: number; total: number }
  latency: { p50: number; p99: number }
  errors: number
  timeouts: number
  non2xx: number
}
const autocannon = createRequire(import.meta.url)('autocannon') as (
  o: CannonOptions,
  cb: (err: Error | null, r: CannonResult) => void,
) => unknown

async function serve(off: Set<string>) {
  const { parseConfig } = await import('../core/config.js')
  const { manifestKey } = await import('../core/model-manifest.js')
  const { startEdge } = await import('../edge/node.js')
  const { createKey } = await import('../edge/keys.js')
  const { makeTestEdge } = await import('../test/helpers/edge-harness.js')
  const { startEchoWorker } = await import('../test/helpers/echo-worker.js')
  // The test harness' in-memory deps, served for real.
  const t = await makeTestEdge({
    worker: false,
    env: { PGPT_RATE_LIMIT_RPM: '1000000000', PGPT_RATE_LIMIT_TPM: '1000000000' },
  })
  const config = parseConfig({
    PGPT_LOG_LEVEL: 'silent',
    PGPT_RATE_LIMIT_RPM: '1000000000',
    PGPT_RATE_LIMIT_TPM: '1000000000',
  })
  // As shipped (edge/node.ts): prom-client with process metrics, SQLite usage records; or no-ops.
  const { SqliteUsageStore } = await import('../core/adapters/sqlite-usage-store.js')
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { createMetrics } = await import('../core/metrics.js')
  const observability = {
    metrics: off.has('metrics') ? await noopMetrics() : createMetrics({ defaultMetrics: true }),
    usage: off.has('usage')
      ? noopUsage
      : new SqliteUsageStore({ file: `${mkdtempSync(`${tmpdir()}/pgpt-bench-`)}/usage.db` }),
  }
  const edge = await startEdge({
    config,
    port: 0,
    hostname: '127.0.0.1',
    deps: { ...t.deps, ...observability, config },
  })
  await edge.deps.store.put(
    manifestKey('echo-1'),
    JSON.stringify({ id: 'echo-1', owner: null, created: 1, context_length: 2048, files: [] }),
  )
  const worker = startEchoWorker({
    queue: edge.deps.queue,
    jobs: edge.deps.jobs,
    events: edge.deps.events,
    usage: edge.deps.usage,
  })
  const { secret } = await createKey(edge.deps.keys, { tenant: 'bench', name: 'bench', scopes: ['generate'] })
  const headers = { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }
  const first = await fetch(`${edge.url}/v1/chat/completions`, { method: 'POST', headers, body: CHAT })
  const second = await fetch(`${edge.url}/v1/chat/completions`, { method: 'POST', headers, body: CHAT })
  await first.text()
  await second.text()
  if (first.headers.get('x-cache') !== 'MISS' || second.headers.get('x-cache') !== 'HIT')
    throw new Error('cache did not warm')
  await worker.stop()
  // The server's own CPU time, so per-request cost can be read apart from a busy machine.
  process.on('message', (m) => {
    if (m === 'cpu') {
      const u = process.cpuUsage()
      process.send?.({ cpu: u.user + u.system })
    }
  })
  process.send?.({ url: edge.url, secret })
}

interface Result {
  rps: number
  /** Server CPU µs per request (user + system). */
  cpu: number
  total: number
  p50: number
  p99: number
  errors: number
  non2xx: number
}

function run(o: CannonOptions): Promise<Result> {
  return new Promise((resolve, reject) => {
    autocannon(o, (err, r) => {
      if (err) return reject(err)
      resolve({
        rps: r.requests.average,
        cpu: 0,
        total: r.requests.total,
        p50: r.latency.p50,
        p99: r.latency.p99,
        errors: r.errors + r.timeouts,
        non2xx: r.non2xx,
      })
    })
  })
}

/** `off`: the observability parts replaced by no-ops (metrics, usage). */
async function startServer(off: string[] = []) {
  const child = fork(new URL(import.meta.url).pathname, ['--serve', `--off=${off.join(',')}`], {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  })
  const { url, secret } = await new Promise<{ url: string; secret: string }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { url: string; secret: string }))
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)))
  })
  const cpu = () =>
    new Promise<number>((resolve) => {
      child.once('message', (m) => resolve((m as { cpu: number }).cpu))
      child.send('cpu')
    })
  const auth = { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }
  return { child, url, auth, cpu }
}

/** Cache hits with metrics + usage as shipped, against the same server with both as no-ops. */
async function observabilityCost(seconds: number, connections: number, rounds: number) {
  const servers = {
    shipped: await startServer(),
    'no-metrics': await startServer(['metrics']),
    'no-usage': await startServer(['usage']),
    bare: await startServer(['metrics', 'usage']),
  }
  const best: Record<string, Result> = {}
  for (let r = 0; r < rounds; r++) {
    for (const [name, s] of Object.entries(servers)) {
      const before = await s.cpu()
      const res = await run({
        url: `${s.url}/v1/chat/completions`,
        method: 'POST',
        headers: s.auth,
        body: CHAT,
        duration: seconds,
        connections,
      })
      res.cpu = ((await s.cpu()) - before) / res.total
      if (res.errors || res.non2xx) throw new Error(`${name}: ${res.errors} errors, ${res.non2xx} non-2xx`)
      if (!best[name] || res.cpu < best[name].cpu) best[name] = res
    }
  }
  for (const s of Object.values(servers)) s.child.kill()
  console.log(
    `observability cost on cache hits: ${seconds}s × ${rounds} rounds, ${connections} connections, Node ${process.version}`,
  )
  console.log('server    req/s    p50 ms  p99 ms  server CPU µs/req')
  for (const [name, r] of Object.entries(best))
    console.log(
      `${name.padEnd(10)}  ${r.rps.toFixed(0).padStart(6)}  ${String(r.p50).padStart(6)}  ${String(r.p99).padStart(6)}  ${r.cpu.toFixed(0).padStart(17)}`,
    )
  const shipped = best.shipped!
  const bare = best.bare!
  for (const part of ['metrics', 'usage'] as const) {
    const without = best[`no-${part}`]!
    console.log(`  ${part}: ${(shipped.cpu - without.cpu).toFixed(0)} µs CPU per request`)
  }
  console.log(
    `metrics + usage cost: ${(((shipped.cpu - bare.cpu) / bare.cpu) * 100).toFixed(1)}% CPU per request; ` +
      `throughput ${(((bare.rps - shipped.rps) / bare.rps) * 100).toFixed(1)}% lower (target ≤ 2%)`,
  )
}

async function main() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '5' },
      connections: { type: 'string', default: '32' },
      rounds: { type: 'string', default: '2' },
      observability: { type: 'boolean', default: false },
    },
  })
  const seconds = Number(values.seconds)
  const connections = Number(values.connections)
  const rounds = Number(values.rounds)
  if (values.observability) return observabilityCost(seconds, connections, rounds)
  const { child, url, auth, cpu } = await startServer()
  const workloads: Record<string, CannonOptions> = {
    health: { url: `${url}/health` },
    models: { url: `${url}/v1/models`, headers: auth },
    cached: { url: `${url}/v1/chat/completions`, method: 'POST', headers: auth, body: CHAT },
  }
  const best: Record<string, Result> = {}
  for (let r = 0; r < rounds; r++) {
    for (const [name, w] of Object.entries(workloads)) {
      const before = await cpu()
      const res = await run({ ...w, duration: seconds, connections })
      res.cpu = ((await cpu()) - before) / res.total
      if (res.errors || res.non2xx)
        throw new Error(`${name}: ${res.errors} errors, ${res.non2xx} non-2xx responses`)
      if (!best[name] || res.cpu < best[name].cpu) best[name] = res
    }
  }
  child.kill()
  console.log(
    `edge bench: ${seconds}s × ${rounds} rounds, ${connections} connections, Node ${process.version}`,
  )
  console.log('workload  req/s    p50 ms  p99 ms  server CPU µs/req  overhead vs health')
  const floor = best.health!.cpu
  for (const [name, r] of Object.entries(best)) {
    const over = name === 'health' ? '' : `+${(r.cpu - floor).toFixed(0)} µs`
    console.log(
      `${name.padEnd(8)}  ${r.rps.toFixed(0).padStart(6)}  ${String(r.p50).padStart(6)}  ${String(r.p99).padStart(6)}  ${r.cpu.toFixed(0).padStart(17)}  ${over}`,
    )
  }
  console.log(
    `CPU ratio models/health (auth + 2 rate-limit decisions + catalog): ${(best.models!.cpu / floor).toFixed(2)}×; ` +
      `cached/health (whole cache-hit path): ${(best.cached!.cpu / floor).toFixed(2)}×; ` +
      `throughput ratio health/cached: ${(best.health!.rps / best.cached!.rps).toFixed(2)}×`,
  )
}

if (process.argv.includes('--serve'))
  await serve(new Set((process.argv.find((a) => a.startsWith('--off=')) ?? '--off=').slice(6).split(',')))
else await main()
