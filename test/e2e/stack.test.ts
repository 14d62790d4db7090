/**
 * `npm start` as a user runs it (bin/start.ts in a child process, the bundled
 * prometheus-mini, worker processes of its own): it prints the URL, the key
 * and a curl; answers a chat completion; and a stack stopped with jobs still
 * queued loses none of them — the next boot's worker finishes every one.
 * GET /ready answers 200 only once the default model is listed, and the
 * banner waits for it; a model `pgpt model publish` writes into the store is
 * listed and served by the running stack on the very next request.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCommand } from 'citty'
import { afterAll, describe, expect, it } from 'vitest'
import modelCommand from '../../cli/model.js'
import { writeByoFolder } from '../helpers/byo-fixtures.js'

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
async function startStack(env: Record<string, string>, o: { banner?: boolean } = {}): Promise<Stack> {
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
  const stop = async () => {
    child.kill('SIGTERM')
    const code = await exited
    running.delete(child)
    return code
  }
  // Without waiting for the banner: the caller knows the port (PORT) and watches /ready itself.
  if (o.banner === false) return { url: `http://127.0.0.1:${env.PORT}`, output: () => out, stop }
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
  return { url, output: () => out, stop }
}

/** A port free right now, for a stack whose URL the test needs before the banner. */
const freePort = () =>
  new Promise<number>((resolvePort, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolvePort(port))
    })
  })

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

  it('is ready only once the default model is listed; a model the CLI publishes is served on the next request', async () => {
    const data = mkdtempSync(join(tmpdir(), 'pgpt-stack-ready-'))
    const folder = mkdtempSync(join(tmpdir(), 'pgpt-stack-model-'))
    const port = await freePort()
    // The default model is one nobody has published yet: the stack must not call itself ready.
    const stack = await startStack(
      { PORT: String(port), PGPT_DATA_DIR: data, PGPT_WORKERS: '1', PGPT_DEFAULT_MODEL: 'late-model' },
      { banner: false },
    )
    const get = (path: string) => api(stack, path).catch(() => null)
    try {
      // The process answers (liveness) ...
      const deadline = Date.now() + 60_000
      while (!(await get('/health'))?.ok) {
        expect(Date.now(), `no /health in 60 s:\n${stack.output()}`).toBeLessThan(deadline)
        await new Promise((r) => setTimeout(r, 100))
      }
      // ... and is not ready, with the reason in OpenAI's error shape.
      const notReady = (await get('/ready'))!
      expect(notReady.status).toBe(503)
      const body = (await notReady.json()) as { error: { message: string; type: string; code: string } }
      expect(body.error).toMatchObject({ type: 'service_unavailable', code: 'not_ready' })
      expect(body.error.message).toContain("'late-model'")
      await writeByoFolder(folder, {
        heads: 4,
        kvHeads: 2,
        tied: true,
        positionIds: true,
        dtype: 'fp32',
        externalData: false,
        configStyle: 'llama',
      })
      // The bundled model is listed as soon as the stack has published it; the stack has read its listing just now.
      const ids = async () =>
        ((await (await get('/v1/models'))!.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id)
      const listedBy = Date.now() + 60_000
      while (!(await ids()).includes('prometheus-mini')) {
        expect(Date.now(), `prometheus-mini not listed in 60 s:\n${stack.output()}`).toBeLessThan(listedBy)
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(await ids()).not.toContain('late-model')
      expect((await get('/ready'))!.status).toBe(503)
      expect(stack.output()).not.toContain('PrometheusGPT is running at')

      // `pgpt model publish <dir> --name late-model --public`, from this process, into the stack's store.
      const saved = { dir: process.env.PGPT_DATA_DIR, profile: process.env.PGPT_PROFILE }
      process.env.PGPT_DATA_DIR = data
      process.env.PGPT_PROFILE = 'local'
      try {
        await runCommand(modelCommand, { rawArgs: ['publish', folder, '--name', 'late-model', '--public'] })
      } finally {
        for (const [k, v] of [
          ['PGPT_DATA_DIR', saved.dir],
          ['PGPT_PROFILE', saved.profile],
        ] as const)
          if (v === undefined) delete process.env[k]
          else process.env[k] = v
      }

      // The very next requests see it: no listing kept from before the publish.
      expect(await ids()).toContain('late-model')
      expect((await get('/ready'))!.status).toBe(200)
      const res = await api(stack, '/v1/completions', {
        model: 'late-model',
        prompt: 'The sea',
        max_tokens: 4,
        temperature: 0,
      })
      expect(res.status, await res.clone().text()).toBe(200)
      const completion = (await res.json()) as { model: string; usage: { completion_tokens: number } }
      expect(completion.model).toBe('late-model')
      expect(completion.usage.completion_tokens).toBeGreaterThan(0)
      // npm start prints its banner once ready, naming the default model in its curl.
      const bannerBy = Date.now() + 10_000
      while (!stack.output().includes('PrometheusGPT is running at') && Date.now() < bannerBy)
        await new Promise((r) => setTimeout(r, 100))
      expect(stack.output()).toContain(`PrometheusGPT is running at http://127.0.0.1:${port}`)
      expect(stack.output()).toContain('"model":"late-model"')
    } catch (err) {
      await stack.stop()
      throw new Error(`${(err as Error).message}\n--- stack output:\n${stack.output()}`, { cause: err })
    } finally {
      rmSync(folder, { recursive: true, force: true })
    }
    expect(await stack.stop()).toBe(0)
    rmSync(data, { recursive: true, force: true })
  }, 180_000)
})
