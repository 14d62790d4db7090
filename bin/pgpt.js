#!/usr/bin/env node
// Runs the TypeScript CLI through tsx so `npx pgpt` works without a build step.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const tsx = require.resolve('tsx/cli')
const entry = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'index.ts')
const r = spawnSync(process.execPath, [tsx, entry, ...process.argv.slice(2)], { stdio: 'inherit' })
process.exit(r.status ?? 1)
