/**
 * `npm start`: the whole stack in the local profile, in one command.
 *
 * - the edge (Hono on Node) on PORT (default 8787), in this process;
 * - PGPT_WORKERS worker processes (default 1), each `workers/main.ts`, exactly
 *   as the worker image runs it, pushing events to this edge over the
 *   authenticated internal channel; a worker that dies is restarted;
 * - the queue, job records, keys and the object store under PGPT_DATA_DIR
 *   (default ./.pgpt), so nothing is lost on restart;
 * - the bundled model (models/prometheus-mini) published into the store on
 *   first boot (and again whenever its files change);
 * - an API key: PGPT_API_KEY when set, else one made at first boot and kept in
 *   <PGPT_DATA_DIR>/first-api-key (mode 0600) so every boot can print it;
 * - the banner (URL, key, a curl to paste) once GET /ready answers 200, i.e.
 *   once the default model is listed: the curl works when it is printed.
 *
 * The edge alone is `pgpt serve` (cli/serve.ts), one worker alone `pgpt worker`.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'
import { banner, bootEdge, stopOnSignals, untilReady } from './edge-boot.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

async function main(): Promise<void> {
  const env = { ...process.env }
  // Workers and edge must agree on one absolute data folder whatever their cwd.
  env.PGPT_DATA_DIR = resolve(env.PGPT_DATA_DIR || './.pgpt')
  // The worker→edge channel needs a shared secret; a fresh one per boot is enough locally.
  env.PGPT_INTERNAL_TOKEN ||= randomBytes(24).toString('base64url')
  const config = loadConfig(env)

  const booted = await bootEdge(config)
  const { edge } = booted
  const { logger } = edge.deps

  const workers = startWorkers(config.PGPT_WORKERS, { ...env, PGPT_EDGE_URL: edge.url }, logger)

  stopOnSignals(async (signal) => {
    logger.info({ signal }, 'stopping: draining workers')
    await workers.stop()
    await edge.close()
  })

  await untilReady(edge, {
    onWaiting: (reason) =>
      process.stdout.write(`\nNot ready yet (${edge.url}/ready): ${reason}\nWaiting; Ctrl-C stops.\n`),
  })
  process.stdout.write(
    await banner(booted, config, [`  data: ${config.PGPT_DATA_DIR}   workers: ${config.PGPT_WORKERS}`]),
  )
}

interface Workers {
  stop(): Promise<void>
}

function startWorkers(
  count: number,
  env: NodeJS.ProcessEnv,
  logger: { warn: (o: object, m: string) => void },
): Workers {
  const tsx = createRequire(import.meta.url).resolve('tsx')
  const entry = join(root, 'workers', 'main.ts')
  const children = new Set<ChildProcess>()
  let stopping = false
  const launch = (slot: number, restarts: number) => {
    const child = spawn(process.execPath, ['--import', tsx, entry], { env, stdio: 'inherit' })
    children.add(child)
    const startedAt = Date.now()
    child.on('exit', (code, signal) => {
      children.delete(child)
      if (stopping) return
      // Restart with backoff; a worker that ran a while resets its count.
      const n = Date.now() - startedAt > 60_000 ? 0 : restarts + 1
      const delay = Math.min(30_000, 500 * 2 ** n)
      logger.warn({ slot, code, signal, restartInMs: delay }, 'worker exited; restarting')
      setTimeout(() => launch(slot, n), delay).unref()
    })
  }
  for (let i = 0; i < count; i++) launch(i, 0)
  return {
    async stop() {
      stopping = true
      await Promise.all(
        [...children].map(
          (c) =>
            new Promise<void>((done) => {
              c.once('exit', () => done())
              c.kill('SIGTERM')
            }),
        ),
      )
    },
  }
}

main().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(78)
  }
  process.stderr.write(
    `npm start failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  process.exit(1)
})
