/**
 * The edge and a worker as two processes, as docs/deploy.md tells a user to
 * run them apart: `pgpt serve` and `pgpt worker` (cli/index.ts, through tsx as
 * `npm run serve` / `npm run worker` do) on one temporary data folder, sharing
 * PGPT_INTERNAL_TOKEN, the worker pointed at the edge with PGPT_EDGE_URL.
 * A chat completion and a stream go through them, and — the local profile
 * being for development — a job's webhook reaches a receiver on 127.0.0.1
 * without any PGPT_WEBHOOK_ALLOW_PRIVATE setting.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { startReceiver } from '../helpers/webhook-receiver.js'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const KEY = 'pgpt_serveworkerkey0123456789'
const TOKEN = 'serve-worker-internal-token-0123'
const dir = mkdtempSync(join(tmpdir(), 'pgpt-serve-worker-'))
const running = new Set<ChildProcess>()

afterAll(() => {
  for (const c of running) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

interface Proc {
  output: () => string
  waitFor(re: RegExp, ms: number): Promise<RegExpExecArray>
  stop(): Promise<number | null>
}

/** `pgpt <args>` as `npm run pgpt -- <args>` runs it, in an environment with no PGPT_ setting but `env`. */
function pgpt(args: string[], env: Record<string, string>): Proc {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PGPT_')))
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/index.ts', ...args], {
    cwd: ROOT,
    env: { ...clean, PGPT_DATA_DIR: dir, PGPT_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  let out = ''
  child.stdout!.on('data', (d) => {
    out += d
  })
  child.stderr!.on('data', (d) => {
    out += d
  })
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  return {
    output: () => out,
    waitFor: (re, ms) =>
      new Promise((resolveMatch, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${re} in ${ms} ms:\n${out}`)), ms)
        const check = () => {
          const m = re.exec(out)
          if (!m) return
          clearTimeout(timer)
          resolveMatch(m)
        }
        child.stdout!.on('data', check)
        child.stderr!.on('data', check)
        check()
        void exited.then((code) => reject(new Error(`pgpt ${args[0]} exited with ${code}:\n${out}`)))
      }),
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      running.delete(child)
      return code
    },
  }
}

describe('pgpt serve + pgpt worker', () => {
  it('serve the API and run its jobs as two processes over one data folder', async () => {
    const edge = pgpt(['serve', '--port', '0'], { PGPT_API_KEY: KEY, PGPT_INTERNAL_TOKEN: TOKEN })
    const receiver = await startReceiver()
    let worker: Proc | undefined
    try {
      // The banner comes once /ready is 200: the bundled model is published and listed.
      const url = (await edge.waitFor(/PrometheusGPT is running at (http:\/\/\S+)/, 60_000))[1]!
      expect(edge.output()).toContain(KEY)
      expect(edge.output()).toContain('npm run worker')
      expect((await fetch(`${url}/ready`)).status).toBe(200)
      worker = pgpt(['worker'], { PGPT_EDGE_URL: url, PGPT_INTERNAL_TOKEN: TOKEN })
      const api = (path: string, body: unknown) =>
        fetch(`${url}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        })

      const res = await api('/v1/chat/completions', {
        model: 'prometheus-mini',
        messages: [{ role: 'user', content: 'Tell me about the sea.' }],
        max_tokens: 6,
        temperature: 0,
      })
      expect(res.status, await res.clone().text()).toBe(200)
      const chat = (await res.json()) as {
        choices: Array<{ message: { content: string } }>
        usage: { completion_tokens: number }
      }
      expect(chat.usage.completion_tokens).toBeGreaterThan(0)
      expect(chat.choices[0]!.message.content.length).toBeGreaterThan(0)

      // A stream needs the worker's events to reach the edge (PGPT_EDGE_URL + PGPT_INTERNAL_TOKEN).
      const stream = await api('/v1/completions', {
        model: 'prometheus-mini',
        prompt: 'The whale',
        max_tokens: 6,
        temperature: 0,
        stream: true,
      })
      expect(stream.status).toBe(200)
      const text = await stream.text()
      expect(text.match(/^data: \{/gm)?.length ?? 0).toBeGreaterThan(1)
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)

      // A webhook to this machine: accepted by the edge and delivered by the worker, local profile defaults.
      const job = await api('/v1/jobs', {
        model: 'prometheus-mini',
        input: { prompt: 'Call me', max_tokens: 4, temperature: 0 },
        webhook: receiver.url,
        webhook_events_filter: ['completed'],
      })
      expect(job.status, await job.clone().text()).toBe(201)
      const { id } = (await job.json()) as { id: string }
      const deadline = Date.now() + 60_000
      while (!receiver.received.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      expect(receiver.received.length, worker.output()).toBeGreaterThan(0)
      expect(receiver.received[0]!.body).toContain(id)
      expect(receiver.received[0]!.headers['webhook-signature']).toBeTruthy()
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\n--- serve:\n${edge.output()}\n--- worker:\n${worker?.output() ?? ''}`,
        { cause: err },
      )
    } finally {
      await receiver.close()
    }
    expect(await worker!.stop()).toBe(0)
    expect(await edge.stop()).toBe(0)
  }, 180_000)
})
