/**
 * Runs an adapter in a worker thread and returns a client for it, so contract
 * suites can race two real connections: the test's own, and one that runs in
 * parallel on another thread (its own SQLite connection, its own event loop),
 * as a second process would. Used as `connect` by the embedded adapters' tests.
 *
 *   const other = await inThread<QueueWithDeadLetter>(import.meta.url, './local-queue.ts', 'openLocalQueue', [opts])
 *
 * The target is created in the thread by calling the named export (or `new`
 * for a class). Methods of the target and of its plain-object properties (one
 * level, e.g. `queue.receive`) become async functions; other values are
 * copied once. An AbortSignal in the first argument's `signal` is forwarded.
 * Errors come back with their name, message and own fields; `revive` may turn
 * them back into their classes. `close()` on the top level also ends the thread.
 */
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'

/** tsx's loader API: the thread imports the adapter's TypeScript source. */
const TSX_API = pathToFileURL(
  createRequire(import.meta.url)
    .resolve('tsx/esm/api')
    .replace(/index\.cjs$/, 'index.mjs'),
).href

type Shape = { [key: string]: { fn: true } | { value: unknown } | { object: Shape } }

export interface ThreadOptions {
  /** Call the export with `new`. */
  construct?: boolean
  /** Rebuild a typed error from what the thread sent. */
  revive?: (err: Record<string, unknown>) => Error | undefined
}

const WORKER = `
import { parentPort, workerData } from 'node:worker_threads'
const { register } = await import(workerData.tsx)
register()
const mod = await import(workerData.url)
const make = mod[workerData.exportName]
const target = workerData.construct ? new make(...workerData.args) : await make(...workerData.args)
const describe = (obj, depth) => {
  const out = {}
  for (let o = obj; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(o))) {
      if (k === 'constructor' || k in out || d.get || d.set) continue
      const v = d.value
      if (typeof v === 'function') out[k] = { fn: true }
      else if (v && typeof v === 'object') { if (depth > 0) out[k] = { object: describe(v, depth - 1) } }
      else out[k] = { value: v }
    }
  }
  return out
}
const aborts = new Map()
parentPort.postMessage({ shape: describe(target, 1) })
parentPort.on('message', async ({ id, path, args, abort }) => {
  if (abort) return aborts.get(id)?.abort()
  try {
    if (args[0] && typeof args[0] === 'object' && args[0].__signal) {
      const ac = new AbortController()
      aborts.set(id, ac)
      args[0] = { ...args[0], signal: ac.signal }
      delete args[0].__signal
    }
    let self = target
    for (const p of path.slice(0, -1)) self = self[p]
    const result = await self[path.at(-1)](...args)
    parentPort.postMessage({ id, result })
  } catch (err) {
    parentPort.postMessage({ id, error: { ...err, name: err?.name, message: err?.message ?? String(err) } })
  } finally {
    aborts.delete(id)
  }
})
`

export async function inThread<T>(
  fromUrl: string,
  modulePath: string,
  exportName: string,
  args: unknown[],
  options: ThreadOptions = {},
): Promise<T> {
  const url = new URL(modulePath, fromUrl).href
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(WORKER)}`), {
    workerData: { url, exportName, args, construct: options.construct ?? false, tsx: TSX_API },
  })
  let next = 0
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>()
  const shape = await new Promise<Shape>((resolve, reject) => {
    worker.once('message', (m: { shape: Shape }) => resolve(m.shape))
    worker.once('error', reject)
  })
  worker.on('message', (m: { id: number; result?: unknown; error?: Record<string, unknown> }) => {
    const p = pending.get(m.id)
    if (!p) return
    pending.delete(m.id)
    if (m.error) {
      const revived = options.revive?.(m.error)
      p.reject(revived ?? Object.assign(new Error(String(m.error.message)), m.error))
    } else p.resolve(m.result)
  })
  worker.on('error', (err) => {
    for (const p of pending.values()) p.reject(err)
    pending.clear()
  })

  let terminated = false
  const terminate = async () => {
    terminated = true
    await worker.terminate()
    for (const p of pending.values()) p.reject(new Error('thread-client: the thread has ended'))
    pending.clear()
  }
  const call = (path: string[], callArgs: unknown[]) =>
    new Promise((resolve, reject) => {
      if (terminated) return reject(new Error('thread-client: the thread has ended'))
      const id = next++
      pending.set(id, { resolve, reject })
      const [first, ...rest] = callArgs
      const signal = (first as { signal?: AbortSignal } | undefined)?.signal
      if (signal) {
        const { signal: _, ...plain } = first as Record<string, unknown>
        worker.postMessage({ id, path, args: [{ ...plain, __signal: true }, ...rest] })
        if (signal.aborted) worker.postMessage({ id, abort: true })
        else signal.addEventListener('abort', () => worker.postMessage({ id, abort: true }), { once: true })
      } else worker.postMessage({ id, path, args: callArgs })
    })

  const build = (s: Shape, path: string[]): Record<string, unknown> => {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(s)) {
      if ('fn' in v) out[k] = (...a: unknown[]) => call([...path, k], a)
      else if ('object' in v) out[k] = build(v.object, [...path, k])
      else out[k] = v.value
    }
    return out
  }
  // close(), on the target or on one of its objects (a queue pair's), closes it and ends the thread.
  const closing = (obj: Record<string, unknown>) => {
    const inner = obj.close as (() => Promise<unknown>) | undefined
    obj.close = async () => {
      if (terminated) return
      await inner?.().catch(() => {})
      await terminate()
    }
  }
  const client = build(shape, [])
  closing(client)
  for (const v of Object.values(client)) if (v && typeof v === 'object') closing(v as Record<string, unknown>)
  return client as T
}
