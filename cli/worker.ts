/**
 * `pgpt worker`: one worker process, exactly the worker image's entry
 * (workers/main.ts): it runs the job kinds of PGPT_WORKER_KINDS from the
 * configured queue until SIGTERM or SIGINT, then drains (exit 0; 78 on bad
 * configuration). It shares the queue, records and store with the edge
 * (`pgpt serve`): in the local profile the same PGPT_DATA_DIR. PGPT_EDGE_URL
 * and PGPT_INTERNAL_TOKEN (the edge's) let it push job events to the edge,
 * which streaming needs.
 */
import { resolve } from 'node:path'
import { defineCommand } from 'citty'

export default defineCommand({
  meta: {
    name: 'worker',
    description: 'Run one worker process (the worker image entry); settings from the environment',
  },
  async run() {
    // The edge and its workers must agree on one absolute data folder whatever their cwd.
    process.env.PGPT_DATA_DIR = resolve(process.env.PGPT_DATA_DIR || './.pgpt')
    if (!process.env.PGPT_EDGE_URL)
      process.stderr.write(
        'warning: PGPT_EDGE_URL is not set: job events do not reach the edge (no streaming; synchronous ' +
          'requests poll). Set PGPT_EDGE_URL to the edge and PGPT_INTERNAL_TOKEN to its token.\n',
      )
    // workers/main.ts is an entry: importing it runs the worker, which owns the process from here
    // (signals, draining, exit codes), as `node --import tsx workers/main.ts` does.
    await import('../workers/main.js')
  },
})
