/**
 * `pgpt serve`: the edge alone (the API on Node, edge/node.ts), without the
 * workers `npm start` runs beside it. Run workers with `pgpt worker`, here or
 * on other hosts. Configured like every process, by environment variables
 * (docs/deploy.md); what the edge and its workers must share:
 *
 * - the queue, the job records and keys, and the object store: in the local
 *   profile the same PGPT_DATA_DIR (SQLite file and store folder); elsewhere
 *   the same PGPT_QUEUE / PGPT_STORE / PGPT_RECORDS settings;
 * - PGPT_INTERNAL_TOKEN, the secret workers push job events with (to
 *   PGPT_EDGE_URL, this edge's URL): without it nothing streams and
 *   synchronous requests learn of a finished job only by polling its record.
 *
 * In the local profile it publishes the bundled models and prints the first
 * API key as `npm start` does. It prints the banner once GET /ready answers 200.
 */
import { resolve } from 'node:path'
import { defineCommand } from 'citty'
import { banner, bootEdge, stopOnSignals, untilReady } from '../bin/edge-boot.js'
import { ConfigError } from '../core/config.js'
import { loadConfig } from '../core/config-node.js'

export default defineCommand({
  meta: {
    name: 'serve',
    description: 'Run the API edge alone (workers: pgpt worker); settings from the environment',
  },
  args: {
    port: { type: 'string', description: 'Port (default: PORT, else 8787; 0 picks a free one)' },
    host: { type: 'string', description: 'Interface (default: HOST, else 127.0.0.1)' },
  },
  async run({ args }) {
    const env = { ...process.env }
    if (args.port !== undefined) env.PORT = args.port
    if (args.host !== undefined) env.HOST = args.host
    // Workers started elsewhere must name the same folder whatever their cwd.
    env.PGPT_DATA_DIR = resolve(env.PGPT_DATA_DIR || './.pgpt')
    let config: ReturnType<typeof loadConfig>
    try {
      config = loadConfig(env)
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      process.stderr.write(`${err.message}\n`)
      process.exit(78)
    }
    const booted = await bootEdge(config)
    const { edge } = booted
    const { logger } = edge.deps
    if (!config.PGPT_INTERNAL_TOKEN)
      logger.warn(
        'PGPT_INTERNAL_TOKEN is not set: workers cannot push job events to this edge (no streaming); ' +
          'set the same value here and on the workers',
      )
    stopOnSignals(() => edge.close())
    await untilReady(edge, {
      onWaiting: (reason) =>
        process.stdout.write(`\nNot ready yet (${edge.url}/ready): ${reason}\nWaiting.\n`),
    })
    const token = config.PGPT_INTERNAL_TOKEN ? '$PGPT_INTERNAL_TOKEN' : '<the same secret on both>'
    process.stdout.write(
      await banner(booted, config, [
        `  data: ${config.PGPT_DATA_DIR}   workers: none here; run them with`,
        `    PGPT_DATA_DIR=${config.PGPT_DATA_DIR} PGPT_EDGE_URL=${edge.url} PGPT_INTERNAL_TOKEN=${token} npm run worker`,
      ]),
    )
  },
})
