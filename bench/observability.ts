/**
 * What metrics and usage recording cost on the edge's cache-hit path. Four
 * edges that differ only in observability serve the same cache hit (a chat
 * completion at temperature 0, answered from the response cache):
 *
 *   shipped:    prom-client metrics (core/metrics.ts, default process metrics
 *               on, as edge/node.ts) and a usage record per request in SQLite
 *               (core/adapters/sqlite-usage-store.ts, a file in a temp folder);
 *   no-metrics: the metrics replaced by empty functions;
 *   no-usage:   the usage store replaced by one that records nothing (and
 *               answers every record with one settled promise, as the
 *               SQLite store answers a commit's records with one);
 *   bare:       both replaced;
 *   plain-prom-client (only when named in --variants): shipped, with
 *               prom-client's own inc/observe instead of core/metrics.ts'
 *               fast paths.
 *
 * Everything else is the test harness' edge (test/helpers/edge-harness.ts:
 * in-memory keys, rate limiter, response cache), its cache filled once by the
 * echo worker double. Requests are sent in-process (`app.fetch` on
 * createApp, no sockets), `--concurrency` in flight (as autocannon's
 * connections, so the usage store's group commit sees batches as under
 * load), each started in its own event-loop turn as from a socket.
 *
 *   npx tsx bench/observability.ts --instructions [--requests 2000] [--warmup 10000] [--repeat 3] [--jobs 1]
 *     [--variants shipped,no-metrics,no-usage,bare,plain-prom-client] [--keep folder] [--minor-gc-task]
 *
 * Instructions per request, which other work on the machine does not change.
 * Each edge in a child process under `valgrind --tool=callgrind` (every
 * thread: JIT, GC, libuv's pool, SQLite; user space only, not the kernel's
 * part of a write), instrumentation off (near-native speed) until the window:
 *
 * 1. `--warmup` requests: the JIT optimises the hot path;
 * 2. a full collection, then `--settle` requests. A full collection
 *    deoptimises code that embeds objects which died ("weak objects" in
 *    --trace-deopt), which is then optimised again over ~1 500 requests;
 * 3. the child goes on serving until the parent has switched instrumentation
 *    on (callgrind_control) and sent SIGUSR2 (an idle edge's hot code would
 *    be aged out by V8's idle-time collections);
 * 4. counters zeroed, exactly `--requests` requests, counters dumped (the
 *    child calls process.availableMemory(), which nothing else calls;
 *    callgrind zeroes and dumps on entry to uv_get_available_memory).
 *
 * A full collection falling by itself into the window (every 3 000–15 000
 * requests with V8's defaults, and the memory reducer's) would swing the
 * count by 5–10% with its re-optimisation, so V8 starts with a 512 MB old
 * generation and no memory reducer: none comes in 30 000 requests. The
 * window is thus the steady state between full collections: the requests'
 * own work, the young-generation collections their allocation causes,
 * SQLite; not the full collections' share. V8 runs single-threaded
 * (--single-threaded) and collects the young generation only when it is
 * full (--no-minor-gc-task: by default a task also collects it early,
 * whenever the loop runs that task, which followed the machine's load: runs
 * beside other work counted up to 4% more). Now a run repeats within ~0.2%,
 * and a pair run beside two busy loops counted 0.2–0.5% more, its cost the
 * same. `--minor-gc-task` leaves the task on, as Node runs by default.
 * About 4 minutes per run of 6 000 requests; `--jobs 2` runs two at once.
 *
 * Over HTTP (the edge on @hono/node-server, autocannon in the parent) the
 * counts did not repeat: the bare edge counted 1.36 M and 1.04 M
 * instructions per request in two runs (3 000 and 10 000 warm-up requests),
 * and the shipped edge 1.8% fewer than bare in the same run: how many
 * requests one turn of the event loop reads depends on the two processes'
 * relative speed. In-process counts repeat to ±0.5%, and are the stricter
 * measure: without the HTTP server's share each request is cheaper, so the
 * same cost is a larger share of it.
 *
 *   npx tsx bench/observability.ts [--requests 4000] [--rounds 15] [--concurrency 32]
 *
 * CPU time, quick but load-dependent: each edge in its own child process;
 * rounds interleaved (shipped, no-metrics, no-usage, bare, then the reverse
 * …) so a change of load on a shared machine hits all four alike. Per round,
 * the process's CPU time (user + system) over `--requests` requests.
 *
 * Both print each edge's median, min and max, and for each part the median
 * of the paired differences to bare (run i against run i) as a share of bare.
 */
import { execFile, fork, spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import type { UsageStore } from '../core/ports/usage-store.js'

export const VARIANTS = ['shipped', 'no-metrics', 'no-usage', 'bare'] as const
/** Not run unless asked for (`--variants`): shipped, but prom-client's own inc/observe (core/metrics.ts fastPaths off). */
const PLAIN_PROM_CLIENT = 'plain-prom-client'
export type Variant = (typeof VARIANTS)[number] | typeof PLAIN_PROM_CLIENT

export const CHAT = JSON.stringify({
  model: 'echo-1',
  messages: [{ role: 'user', content: 'the quick brown fox jumps over the lazy dog' }],
  temperature: 0,
  max_tokens: 16,
})

/** Metrics whose every method does nothing (lighter than a Proxy, so "bare" is a true floor). */
export async function noopMetrics() {
  const { createMetrics } = await import('../core/metrics.js')
  const shape = createMetrics()
  const noop = {
    inc() {},
    dec() {},
    set() {},
    observe() {},
    startTimer: () => () => 0,
    labels: () => noop,
    reset() {},
  }
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(shape)) out[k] = noop
  out.registry = { metrics: async () => '', contentType: 'text/plain' }
  return out as unknown as typeof shape
}

/**
 * A usage store that records nothing, answering every record with one settled
 * promise (as the SQLite store answers a commit's records with one): a fresh
 * promise per call would make recordUsage attach a failure handler per
 * request, work the floor must not include.
 */
const recorded = Promise.resolve()
export const noopUsage: UsageStore = { name: 'noop', record: () => recorded, query: async () => [] }

/**
 * The harness' edge with the observability of `off` replaced by no-ops, its
 * response cache holding CHAT's answer; `hit()` sends CHAT in-process.
 */
export async function benchEdge(off: { metrics?: boolean; usage?: boolean; fastPaths?: boolean }) {
  const { createMetrics } = await import('../core/metrics.js')
  const { SqliteUsageStore } = await import('../core/adapters/sqlite-usage-store.js')
  const { makeTestEdge } = await import('../test/helpers/edge-harness.js')
  const dir = mkdtempSync(join(tmpdir(), 'pgpt-bench-'))
  const usage: UsageStore = off.usage ? noopUsage : new SqliteUsageStore({ file: join(dir, 'usage.db') })
  const metrics = off.metrics
    ? await noopMetrics()
    : createMetrics({ defaultMetrics: true, fastPaths: off.fastPaths !== false })
  const limits = { PGPT_RATE_LIMIT_RPM: '1000000000', PGPT_RATE_LIMIT_TPM: '1000000000' }
  const t = await makeTestEdge({ env: limits, deps: { usage, metrics } })
  const secret = t.keys.generate
  const headers = { ...t.auth(secret), 'content-type': 'application/json' }
  const hit = () =>
    t.app.fetch(
      new Request('http://edge/v1/chat/completions', { method: 'POST', headers, body: CHAT }),
    ) as Promise<Response>
  const first = await hit()
  await first.text()
  await t.close() // the echo worker: every later request must be a cache hit
  const check = await hit()
  await check.text()
  if (first.headers.get('x-cache') !== 'MISS' || check.headers.get('x-cache') !== 'HIT')
    throw new Error('cache did not warm')
  return {
    app: t.app,
    deps: t.deps,
    secret,
    headers,
    hit,
    async close() {
      await usage.close?.()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

const offOf = (v: Variant) => ({
  metrics: v === 'no-metrics' || v === 'bare',
  usage: v === 'no-usage' || v === 'bare',
  fastPaths: v !== PLAIN_PROM_CLIENT,
})

/** `n` cache hits in-process, `concurrency` in flight; throws on anything but a 200 HIT. */
async function drive(hit: () => Promise<Response>, n: number, concurrency: number): Promise<void> {
  let started = 0
  const lane = async () => {
    while (started < n) {
      started++
      await new Promise(setImmediate) // a request arrives in its own event-loop turn, as from a socket
      const res = await hit()
      await res.arrayBuffer()
      if (res.status !== 200 || res.headers.get('x-cache') !== 'HIT')
        throw new Error(`status ${res.status}, x-cache ${res.headers.get('x-cache')}`)
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, lane))
}

// --- child processes ---

/** CPU child: serves rounds in-process on request, answers each with its CPU time in µs. */
async function cpuChild(variant: Variant) {
  const e = await benchEdge(offOf(variant))
  process.on('message', async (m: { n: number; concurrency: number } | 'exit') => {
    if (m === 'exit') {
      await e.close()
      process.exit(0)
    }
    const before = process.cpuUsage()
    await drive(e.hit, m.n, m.concurrency)
    const d = process.cpuUsage(before)
    process.send?.({ cpu: d.user + d.system })
  })
  process.send?.('ready')
}

/** Instruction-count child, under callgrind: the steps at the top of this file; "warm" on stdout before SIGUSR2. */
async function countChild(variant: Variant, o: CountOptions) {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  // Everything the handshake touches is used before the warm-up, so it cannot deoptimise anything.
  let go = false
  process.on('SIGUSR2', () => {
    go = true
  })
  process.stdout.write('started\n')
  const e = await benchEdge(offOf(variant))
  await drive(e.hit, o.warmup, o.concurrency)
  gc()
  await drive(e.hit, o.settle, o.concurrency)
  process.stdout.write('warm\n')
  while (!go) await drive(e.hit, o.concurrency, o.concurrency)
  process.availableMemory() // callgrind: dump + zero
  await drive(e.hit, o.requests, o.concurrency)
  process.availableMemory() // callgrind: dump (the window) + zero
  await e.close()
}

// --- the parent ---

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const pct = (x: number) => `${(x * 100).toFixed(2)}%`
const fmt = (x: number) => (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(1))

/** Each edge's median, min and max; each part's paired differences to bare. */
function report(unit: string, per: Partial<Record<Variant, number[]>>) {
  console.log(`edge               ${unit}: median / min / max`)
  for (const [v, xs] of Object.entries(per))
    console.log(`${v.padEnd(17)}  ${fmt(median(xs))} / ${fmt(Math.min(...xs))} / ${fmt(Math.max(...xs))}`)
  const bare = per.bare
  if (!bare) return
  for (const [what, v] of [
    ['metrics + usage', 'shipped'],
    ['metrics alone', 'no-usage'],
    ['usage alone', 'no-metrics'],
  ] as const) {
    const xs = per[v]
    if (!xs) continue
    const d = xs.map((x, i) => x - bare[i]!)
    console.log(
      `${what.padEnd(16)} ${fmt(median(d))} ${unit} = ${pct(median(d) / median(bare))} of bare ` +
        `(paired runs: ${fmt(Math.min(...d))} to ${fmt(Math.max(...d))})`,
    )
  }
  const plain = per[PLAIN_PROM_CLIENT]
  const shipped = per.shipped
  if (plain && shipped) {
    const d = plain.map((x, i) => x - shipped[i]!)
    console.log(
      `prom-client's own inc/observe instead of core/metrics.ts fast paths: +${fmt(median(d))} ${unit} ` +
        `= ${pct(median(d) / median(bare))} of bare (paired runs: ${fmt(Math.min(...d))} to ${fmt(Math.max(...d))})`,
    )
  }
}

async function cpuMode(requests: number, rounds: number, concurrency: number, variants: Variant[]) {
  const children = new Map<Variant, ReturnType<typeof fork>>()
  const reply = <T>(c: ReturnType<typeof fork>) =>
    new Promise<T>((resolve, reject) => {
      c.once('message', (m) => resolve(m as T))
      c.once('exit', (code) => reject(new Error(`child exited with ${code}`)))
    })
  for (const v of variants) {
    const c = fork(new URL(import.meta.url).pathname, ['--cpu-child', v], {
      execArgv: ['--import', 'tsx'],
      stdio: 'inherit',
    })
    await reply(c)
    children.set(v, c)
  }
  const cpu: Partial<Record<Variant, number[]>> = {}
  // Round 0 warms every child up (JIT) and is not counted; the order alternates.
  for (let r = 0; r <= rounds; r++) {
    for (const v of r % 2 ? [...variants].reverse() : variants) {
      const c = children.get(v)!
      const answer = reply<{ cpu: number }>(c)
      c.send({ n: requests, concurrency })
      const got = await answer
      if (r > 0) cpu[v] = [...(cpu[v] ?? []), got.cpu / requests]
    }
  }
  for (const c of children.values()) c.send('exit')
  console.log(
    `observability cost, in-process cache hits: ${rounds} rounds × ${requests} requests, ` +
      `concurrency ${concurrency}, Node ${process.version}, load average ${loadavg()[0]!.toFixed(1)}`,
  )
  report('CPU µs/req', cpu)
}

/** This file bundled into one plain module (no tsx loader thread under valgrind), next to node_modules. */
async function bundle(): Promise<string> {
  const { build } = await import('esbuild') // tsx's own esbuild
  const outfile = join(import.meta.dirname, '../.tmp/bench/observability.mjs')
  await build({
    entryPoints: [new URL(import.meta.url).pathname],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile,
    logLevel: 'warning',
  })
  return outfile
}

interface CountOptions {
  warmup: number
  settle: number
  requests: number
  concurrency: number
  /** Keep the window's callgrind profile here (for callgrind_annotate). */
  keep?: string
  /** Leave V8's young-generation task on, as Node runs by default (counts then follow the load). */
  minorGcTask?: boolean
}

/** Instructions (Ir) of one child's window (see the top of this file). */
async function countOnce(script: string, variant: Variant, o: CountOptions): Promise<number> {
  const out = mkdtempSync(join(tmpdir(), 'pgpt-callgrind-'))
  try {
    const child = spawn(
      'valgrind',
      [
        '--tool=callgrind',
        '--instr-atstart=no',
        `--callgrind-out-file=${out}/cg.out`,
        '--dump-before=uv_get_available_memory',
        '--zero-before=uv_get_available_memory',
        process.execPath,
        // One thread for V8 (no concurrent JIT or GC threads): the same work, in a repeatable order.
        '--single-threaded',
        // No full collection comes by itself (see the top of this file).
        '--initial-old-space-size=512',
        '--no-memory-reducer',
        // Young-generation collections only when the space is full, not also from a task run
        // whenever the loop gets to it: that timing followed the machine's load.
        ...(o.minorGcTask ? [] : ['--no-minor-gc-task']),
        '--expose-gc',
        script,
        '--count-child',
        variant,
        `--warmup=${o.warmup}`,
        `--settle=${o.settle}`,
        `--requests=${o.requests}`,
        `--concurrency=${o.concurrency}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('warm')) resolve()
      })
      void exited.then((code) => reject(new Error(`child exited with ${code}: ${stderr.slice(-2000)}`)))
    })
    await promisify(execFile)('callgrind_control', ['--instr=on', String(child.pid)])
    child.kill('SIGUSR2')
    const code = await exited
    if (code !== 0) throw new Error(`child exited with ${code}: ${stderr.slice(-2000)}`)
    // Dumps: 1 = from instrumentation on to the first marker, 2 = the window; then the exit's.
    const parts = readdirSync(out).filter((f) => /^cg\.out\.\d+$/.test(f))
    if (parts.length !== 2) throw new Error(`expected 2 dumps before exit, got ${parts.length}`)
    const window = readFileSync(join(out, 'cg.out.2'), 'utf8')
    if (!/^part: 2$/m.test(window)) throw new Error('cg.out.2 is not part 2')
    if (o.keep) copyFileSync(join(out, 'cg.out.2'), o.keep)
    return Number(/^summary: (\d+)$/m.exec(window)![1])
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}

async function instructionsMode(o: CountOptions, repeat: number, variants: Variant[], jobs: number) {
  for (const tool of ['valgrind', 'callgrind_control'])
    await promisify(execFile)(tool, ['--version']).catch(() => {
      throw new Error(`--instructions needs ${tool} (Debian: apt-get install valgrind)`)
    })
  const script = await bundle()
  if (o.keep) mkdirSync(o.keep, { recursive: true })
  const ir: Partial<Record<Variant, number[]>> = {}
  for (const v of variants) ir[v] = []
  const runs = Array.from({ length: repeat }, (_, r) => variants.map((v) => ({ r, v }))).flat()
  // Counts hardly depend on other work on the machine: runs may share it (`--jobs`).
  const next = async (): Promise<void> => {
    const run = runs.shift()
    if (!run) return
    const keep = o.keep && join(o.keep, `callgrind.${run.v}.${run.r + 1}`)
    const n = (await countOnce(script, run.v, { ...o, keep })) / o.requests
    ir[run.v]![run.r] = n
    console.log(`  run ${run.r + 1}, ${run.v}: ${n.toFixed(0)} instructions/request`)
    return next()
  }
  await Promise.all(Array.from({ length: jobs }, next))
  console.log(
    `observability cost, instructions per cache hit (callgrind, in-process, ${o.concurrency} in flight): ` +
      `${repeat} runs × ${o.requests} requests after ${o.warmup} + ${o.settle} warm-up, Node ${process.version}`,
  )
  report('instructions/req', ir)
}

async function main() {
  const { values } = parseArgs({
    options: {
      instructions: { type: 'boolean', default: false },
      requests: { type: 'string' },
      rounds: { type: 'string', default: '15' },
      concurrency: { type: 'string', default: '32' },
      warmup: { type: 'string', default: '10000' },
      settle: { type: 'string', default: '2000' },
      repeat: { type: 'string', default: '3' },
      jobs: { type: 'string', default: '1' },
      variants: { type: 'string', default: VARIANTS.join(',') },
      'cpu-child': { type: 'string' },
      'count-child': { type: 'string' },
      keep: { type: 'string' },
      'minor-gc-task': { type: 'boolean', default: false },
    },
  })
  if (values['cpu-child']) return cpuChild(values['cpu-child'] as Variant)
  const count: CountOptions = {
    warmup: Number(values.warmup),
    settle: Number(values.settle),
    requests: Number(values.requests ?? 2000),
    concurrency: Number(values.concurrency),
    ...(values.keep ? { keep: values.keep } : {}),
    minorGcTask: values['minor-gc-task'],
  }
  if (values['count-child']) return countChild(values['count-child'] as Variant, count)
  const variants = values.variants.split(',') as Variant[]
  if (values.instructions)
    return instructionsMode(count, Number(values.repeat), variants, Number(values.jobs))
  return cpuMode(Number(values.requests ?? 4000), Number(values.rounds), Number(values.concurrency), variants)
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main()
