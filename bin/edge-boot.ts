/**
 * What `npm start` (bin/start.ts) and `pgpt serve` (cli/serve.ts) share: the
 * edge on Node, then in the local profile the bundled models published into
 * the store and the first API key, and the wait for GET /ready before the
 * "running at" banner, so its curl works when it is printed.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Config } from '../core/config.js'
import type { ApiKeyRecord } from '../core/ports/key-store.js'
import { ensureKey, randomSecret } from '../edge/keys.js'
import { type RunningEdge, startEdge } from '../edge/node.js'
import { publishBundledModels } from './bundled-models.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

export interface BootedEdge {
  edge: RunningEdge
  /** The key the banner prints: PGPT_API_KEY, else (local profile) the first key of the data folder. */
  apiKey?: string
  key?: ApiKeyRecord
}

export async function bootEdge(config: Config): Promise<BootedEdge> {
  const local = config.PGPT_PROFILE === 'local'
  mkdirSync(config.PGPT_DATA_DIR, { recursive: true })
  const edge = await startEdge({ config })
  const { logger, store, keys } = edge.deps
  if (local) {
    const published = await publishBundledModels(store, join(root, 'models'))
    for (const m of published) logger.info({ model: m.id, files: m.files.length }, 'bundled model published')
  }
  const apiKey = config.PGPT_API_KEY ?? (local ? firstKey(config.PGPT_DATA_DIR) : undefined)
  if (!apiKey) return { edge }
  const key = await ensureKey(keys, apiKey)
  if (key.revokedAt !== undefined) logger.warn({ key: key.display }, 'the printed key is revoked')
  return { edge, apiKey, key }
}

/** The local first key: made once, kept beside the data so every boot prints the same one. */
function firstKey(dataDir: string): string {
  const file = join(dataDir, 'first-api-key')
  if (existsSync(file)) return readFileSync(file, 'utf8').trim()
  const secret = randomSecret()
  writeFileSync(file, `${secret}\n`, { mode: 0o600 })
  return secret
}

export interface WaitOptions {
  /** Told once, after `patienceMs`, why the edge is not ready yet. */
  onWaiting?: (reason: string) => void
  patienceMs?: number
  intervalMs?: number
}

/** Resolves once GET /ready answers 200 (asked in-process, as a probe would ask over HTTP). */
export async function untilReady(edge: RunningEdge, o: WaitOptions = {}): Promise<void> {
  const started = Date.now()
  let told = false
  for (;;) {
    const res = await edge.app.request('/ready')
    if (res.status === 200) return
    if (!told && Date.now() - started >= (o.patienceMs ?? 5000)) {
      told = true
      const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null
      o.onWaiting?.(body?.error?.message ?? `GET /ready answered ${res.status}`)
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 250))
  }
}

/** The model the banner's example names: PGPT_DEFAULT_MODEL, else the first one listed. */
async function exampleModel(b: BootedEdge, config: Config): Promise<string> {
  if (config.PGPT_DEFAULT_MODEL) return config.PGPT_DEFAULT_MODEL
  const models = await b.edge.deps.models.all()
  return models.find((m) => m.owner === null || m.owner === b.key?.tenant)?.id ?? models[0]?.id ?? 'MODEL'
}

/** "PrometheusGPT is running at …", the key and a curl to paste; printed once ready. */
export async function banner(b: BootedEdge, config: Config, extra: string[] = []): Promise<string> {
  const { url } = b.edge
  const key = b.apiKey ?? '$PGPT_KEY'
  const model = await exampleModel(b, config)
  return [
    '',
    `PrometheusGPT is running at ${url}`,
    b.key
      ? `  API key (tenant '${b.key.tenant}', scopes ${b.key.scopes.join(',')}): ${b.apiKey}`
      : '  API key: none configured (set PGPT_API_KEY, or create one: npm run pgpt -- keys create)',
    `  docs: ${url}/docs   OpenAPI: ${url}/openapi.json   ready: ${url}/ready`,
    ...extra,
    '',
    'Try it:',
    `  curl ${url}/v1/chat/completions \\`,
    `    -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" \\`,
    `    -d '{"model":"${model}","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":40}'`,
    '',
  ].join('\n')
}

/**
 * Ctrl-C and SIGTERM: the first runs `stop` and exits 0; a second exits 1 at
 * once (un-acked jobs come back to the queue later).
 */
export function stopOnSignals(stop: (signal: NodeJS.Signals) => Promise<void>): void {
  let stopping = false
  const onSignal = async (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1)
    stopping = true
    await stop(signal)
    process.exit(0)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}
