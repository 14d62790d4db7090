/**
 * `npm start` as a user runs it (bin/start.ts in a child process, the bundled
 * prometheus-mini, worker processes of its own): it prints the URL, the key
 * and a curl; answers a chat completion; and a stack stopped with jobs still
 * queued loses none of them — the next boot's worker finishes every one.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const KEY = 'pgpt_stacktestkey0123456789'
const dir = mkdtempSync(join(tmpdir(), 'pgpt-stack-'))
const running = new Set<ChildProcess>()

interface Stack {
  url: string
  output: () => string
  stop(): Promise<number | null>
}

/** Start `npm start`'s program exactly as the script does (tsx bin/start.ts). */
async function startStack(env: Record<string, string>): Promise<Stack> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/start.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: '0',
      PGPT_DATA_DIR: dir,
      PGPT_API_KEY: KEY,
      PGPT_LOG_LEVEL: 'warn',
      PGPT_VISIBILITY_TIMEOUT_S: '10',
      ...env,
    },
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
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${out}`)), 60_000)
    const check = () => {
      const m = /PrometheusGPT is running at (http:\/\/\S+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolveUrl(m[1]!)
      }
    }
    child.stdout!.on('data', check)
    void exited.then((code) => reject(new Error(`stack exited with ${code}:\n${out}`)))
  })
  return {
    url,
    output: () => out,
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      running.delete(child)
      return code
    },
  }
}

afterAll(async () => {
  for (const c of running) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

const api = (stack: Stack, path: string, body?: unknown) =>
  fetch(`${stack.url}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  })

describe('npm start', () => {
  it('boots the stack, prints the key and a curl, serves the bundled model', async () => {
    const stack = await startStack({ PGPT_WORKERS: '1' })
    try {
      expect(stack.output()).toContain(`API key (tenant 'default'`)
      expect(stack.output()).toContain(KEY)
      expect(stack.output()).toContain(`curl ${stack.url}/v1/chat/completions`)
      const models = (await (await api(stack, '/v1/models')).json()) as { data: Array<{ id: string }> }
      expect(models.data.map((m) => m.id)).toContain('prometheus-mini')
      const res = await api(stack, '/v1/chat/completions', {
        model: 'prometheus-mini',
        messages: [{ role: 'user', content: 'Tell me about the sea.' }],
        max_tokens: 8,
        temperature: 0,
      })
      expect(res.status).toBe(200)
      const chat = (await res.json()) as {
        choices: Array<{ message: { content: string }; finish_reason: string }>
        usage: { completion_tokens: number }
      }
      expect(chat.choices[0]!.message.content.length).toBeGreaterThan(0)
      expect(chat.usage.completion_tokens).toBeGreaterThan(0)
    } finally {
      expect(await stack.stop()).toBe(0)
    }
  }, 120_000)

  it('loses no queued job across a restart', async () => {
    // No workers: the jobs stay queued while this stack runs.
    const first = await startStack({ PGPT_WORKERS: '0' })
    const ids: string[] = []
    try {
      for (const prompt of ['The sea', 'The whale', 'The ship']) {
        const res = await api(first, '/v1/jobs', {
          model: 'prometheus-mini',
          input: { prompt, max_tokens: 4, temperature: 0 },
        })
        expect(res.status).toBe(201)
        const job = (await res.json()) as { id: string; status: string }
        expect(job.status).toBe('queued')
        ids.push(job.id)
      }
    } finally {
      expect(await first.stop()).toBe(0)
    }
    // The same data folder, now with a worker: every job finishes.
    const second = await startStack({ PGPT_WORKERS: '1' })
    try {
      const deadline = Date.now() + 90_000
      let states: string[] = []
      while (Date.now() < deadline) {
        states = await Promise.all(
          ids.map(
            async (id) => ((await (await api(second, `/v1/jobs/${id}`)).json()) as { status: string }).status,
          ),
        )
        if (states.every((s) => s === 'succeeded')) break
        await new Promise((r) => setTimeout(r, 250))
      }
      expect(states).toEqual(['succeeded', 'succeeded', 'succeeded'])
    } finally {
      expect(await second.stop()).toBe(0)
    }
  }, 180_000)
})
