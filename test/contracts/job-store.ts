/**
 * Contract suite for the JobStore port (core/ports/job-store.ts). Every
 * adapter's test file calls `testJobStore({ name, make })` and nothing else;
 * the suite never skips.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  IllegalTransitionError,
  JOB_STATES,
  JOB_TRANSITIONS,
  type JobState,
  type JobStore,
  type NewJob,
  StaleRunError,
} from '../../core/ports/job-store.js'

export interface MadeJobStore {
  /** A fresh, empty store. */
  store: JobStore
  /** A second client of the same records (another process, as far as the adapter can tell). */
  connect: () => Promise<JobStore>
  cleanup?: () => Promise<void>
}

export interface JobStoreContractOptions {
  name: string
  make: () => Promise<MadeJobStore>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const job = (over: Partial<NewJob> = {}): NewJob => ({
  tenant: 'tenant_a',
  kind: 'generation',
  input: { prompt: 'Once upon a time', max_tokens: 16 },
  ...over,
})

/** A path of allowed transitions from queued to `state`. */
const PATH_TO: Record<JobState, JobState[]> = {
  queued: [],
  running: ['running'],
  succeeded: ['running', 'succeeded'],
  failed: ['failed'],
  canceled: ['canceled'],
}

export function testJobStore({ name, make }: JobStoreContractOptions) {
  describe(`JobStore contract: ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c()
    })
    const setup = async () => {
      const made = await make()
      if (made.cleanup) cleanups.push(made.cleanup)
      cleanups.push(async () => made.store.close?.())
      return made
    }
    const connect = async (made: MadeJobStore) => {
      const other = await made.connect()
      cleanups.push(async () => other.close?.())
      return other
    }

    it('creates a queued job with a job_ id and every field it was given', async () => {
      const { store } = await setup()
      const before = Date.now()
      const rec = await store.create(
        job({
          model: 'prometheus-mini',
          requestId: 'req_1',
          apiKeyId: 'key_1',
          webhook: { url: 'https://example.com/hook', eventsFilter: ['completed'] },
          metadata: { user: 'u1' },
        }),
      )
      expect(rec.id).toMatch(/^job_/)
      expect(rec).toMatchObject({
        tenant: 'tenant_a',
        kind: 'generation',
        state: 'queued',
        model: 'prometheus-mini',
        input: { prompt: 'Once upon a time', max_tokens: 16 },
        attempts: 0,
        cancelRequested: false,
        requestId: 'req_1',
        apiKeyId: 'key_1',
        webhook: { url: 'https://example.com/hook', eventsFilter: ['completed'] },
        metadata: { user: 'u1' },
      })
      expect(rec.createdAt).toBeGreaterThanOrEqual(before)
      expect(rec.updatedAt).toBe(rec.createdAt)
      expect(rec.startedAt).toBeUndefined()
      expect(rec.finishedAt).toBeUndefined()
      expect(rec.output).toBeUndefined()
      expect(await store.getById(rec.id)).toEqual(rec)
      expect(await store.get('tenant_a', rec.id)).toEqual(rec)
    })

    it('keeps a given id and refuses a duplicate', async () => {
      const { store } = await setup()
      const rec = await store.create(job({ id: 'job_custom1' }))
      expect(rec.id).toBe('job_custom1')
      await expect(store.create(job({ id: 'job_custom1', tenant: 'tenant_b' }))).rejects.toThrow()
      expect((await store.getById('job_custom1'))?.tenant).toBe('tenant_a')
    })

    it('reads another tenant’s job as missing', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      expect(await store.get('tenant_b', rec.id)).toBeNull()
      expect(await store.get('tenant_a', 'job_missing')).toBeNull()
      expect(await store.getById('job_missing')).toBeNull()
      expect(await store.requestCancel('tenant_b', rec.id)).toBeNull()
      expect((await store.getById(rec.id))?.cancelRequested).toBe(false)
    })

    it('runs a job: attempts, startedAt, output and finishedAt', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      await sleep(2)
      const running = await store.transition(rec.id, 'running')
      expect(running).toMatchObject({ state: 'running', attempts: 1 })
      expect(running.startedAt).toBeGreaterThan(rec.createdAt)
      expect(running.updatedAt).toBeGreaterThan(rec.updatedAt)
      expect(running.finishedAt).toBeUndefined()
      const done = await store.transition(rec.id, 'succeeded', {
        output: { text: 'the end', tokens: [1, 2] },
      })
      expect(done).toMatchObject({
        state: 'succeeded',
        attempts: 1,
        output: { text: 'the end', tokens: [1, 2] },
      })
      expect(done.finishedAt).toBeGreaterThanOrEqual(running.startedAt!)
      expect(await store.get('tenant_a', rec.id)).toEqual(done)
    })

    it('counts attempts across redeliveries and records errors', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      await store.transition(rec.id, 'running')
      const requeued = await store.transition(rec.id, 'queued')
      expect(requeued).toMatchObject({ state: 'queued', attempts: 1 })
      expect(requeued.finishedAt).toBeUndefined()
      expect((await store.transition(rec.id, 'running')).attempts).toBe(2)
      const failed = await store.transition(rec.id, 'failed', {
        error: { message: 'out of memory', code: 'oom' },
      })
      expect(failed).toMatchObject({
        state: 'failed',
        attempts: 2,
        error: { message: 'out of memory', code: 'oom' },
      })
      expect(failed.finishedAt).toBeDefined()
    })

    // Every (from, to) pair: allowed ones succeed, the others throw and change nothing.
    const pairs = JOB_STATES.flatMap((from) => JOB_STATES.map((to) => [from, to] as const))
    it.each(pairs)('enforces the state machine: %s -> %s', async (from, to) => {
      const { store } = await setup()
      const rec = await store.create(job())
      for (const step of PATH_TO[from]) await store.transition(rec.id, step)
      const before = await store.getById(rec.id)
      expect(before?.state).toBe(from)
      if (JOB_TRANSITIONS[from].includes(to)) {
        expect((await store.transition(rec.id, to)).state).toBe(to)
      } else {
        const err = await store.transition(rec.id, to).catch((e: unknown) => e)
        expect(err).toBeInstanceOf(IllegalTransitionError)
        expect(err).toMatchObject({ jobId: rec.id, from, to })
        expect(await store.getById(rec.id)).toEqual(before)
      }
    })

    it('throws when transitioning a missing job', async () => {
      const { store } = await setup()
      await expect(store.transition('job_nope', 'running')).rejects.toThrow()
    })

    it('lets exactly one of many racing clients finish a job', async () => {
      const made = await setup()
      const other = await connect(made)
      const rec = await made.store.create(job())
      await made.store.transition(rec.id, 'running')
      const clients = [made.store, other, made.store, other, made.store, other]
      const results = await Promise.allSettled(
        clients.map((s, i) =>
          s.transition(
            rec.id,
            i % 2 ? 'failed' : 'succeeded',
            i % 2 ? { error: { message: `w${i}`, code: 'x' } } : { output: `w${i}` },
          ),
        ),
      )
      const won = results.filter((r) => r.status === 'fulfilled')
      expect(won).toHaveLength(1)
      for (const r of results)
        if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(IllegalTransitionError)
      const final = await other.getById(rec.id)
      expect(final).toEqual((won[0] as PromiseFulfilledResult<unknown>).value)
    })

    it('lets exactly one of two racing clients start a queued job', async () => {
      const made = await setup()
      const other = await connect(made)
      const rec = await made.store.create(job())
      const results = await Promise.allSettled([
        made.store.transition(rec.id, 'running'),
        other.transition(rec.id, 'running'),
      ])
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      expect((await made.store.getById(rec.id))?.attempts).toBe(1)
    })

    // Run fencing: worker 1 lost its lease, worker 2 took the job over (running -> queued -> running).
    it.each([
      ['succeeded', { output: 'late' }],
      ['failed', { error: { message: 'late', code: 'x' } }],
      ['canceled', {}],
      ['queued', {}],
    ] as const)('refuses a stale run’s -> %s once another run took the job over', async (to, patch) => {
      const made = await setup()
      const other = await connect(made)
      const rec = await made.store.create(job())
      const run1 = await made.store.transition(rec.id, 'running')
      await other.transition(rec.id, 'queued', { run: run1.attempts })
      const run2 = await other.transition(rec.id, 'running', { run: run1.attempts })
      expect(run2.attempts).toBe(2)
      const err = await made.store
        .transition(rec.id, to, { ...patch, run: run1.attempts })
        .catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StaleRunError)
      expect(err).toBeInstanceOf(IllegalTransitionError)
      expect(err).toMatchObject({ jobId: rec.id, from: 'running', to, run: 1, currentRun: 2 })
      expect(await other.getById(rec.id)).toEqual(run2)
      // The current run's writes go through; afterwards the stale run is still refused.
      const done = await other.transition(rec.id, 'succeeded', { output: 'run 2', run: 2 })
      expect(done).toMatchObject({ state: 'succeeded', output: 'run 2', attempts: 2 })
      await expect(
        made.store.transition(rec.id, 'succeeded', { output: 'late', run: 1 }),
      ).rejects.toBeInstanceOf(StaleRunError)
      expect(await made.store.getById(rec.id)).toEqual(done)
    })

    it('a fenced write of the current run, or an unfenced one, is only held to the state machine', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      const running = await store.transition(rec.id, 'running', { run: 0 })
      const requeued = await store.transition(rec.id, 'queued', { run: running.attempts })
      expect(requeued).toMatchObject({ state: 'queued', attempts: 1 })
      await store.transition(rec.id, 'running')
      // Not stale, but not allowed: IllegalTransitionError itself.
      await store.transition(rec.id, 'succeeded', { output: 'ok', run: 2 })
      const err = await store.transition(rec.id, 'failed', { run: 2 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(IllegalTransitionError)
      expect(err).not.toBeInstanceOf(StaleRunError)
    })

    it('requestCancel cancels a queued job at once', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      const canceled = await store.requestCancel('tenant_a', rec.id)
      expect(canceled).toMatchObject({ id: rec.id, state: 'canceled', cancelRequested: true })
      expect(canceled?.finishedAt).toBeDefined()
      await expect(store.transition(rec.id, 'running')).rejects.toBeInstanceOf(IllegalTransitionError)
    })

    it('requestCancel flags a running job for its worker', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      await store.transition(rec.id, 'running')
      const flagged = await store.requestCancel('tenant_a', rec.id)
      expect(flagged).toMatchObject({ state: 'running', cancelRequested: true })
      expect((await store.getById(rec.id))?.cancelRequested).toBe(true)
      expect((await store.transition(rec.id, 'canceled')).state).toBe('canceled')
    })

    it('requestCancel leaves a finished job as it is', async () => {
      const { store } = await setup()
      const rec = await store.create(job())
      await store.transition(rec.id, 'running')
      const done = await store.transition(rec.id, 'succeeded', { output: 'ok' })
      const after = await store.requestCancel('tenant_a', rec.id)
      expect(after?.state).toBe('succeeded')
      expect(after?.output).toBe('ok')
      expect(after?.finishedAt).toBe(done.finishedAt)
    })

    it('lists a tenant’s jobs newest first, page by page', async () => {
      const { store } = await setup()
      const ids: string[] = []
      for (let i = 0; i < 7; i++) {
        ids.push((await store.create(job({ input: { i } }))).id)
        await store.create(job({ tenant: 'tenant_b' }))
        await sleep(2)
      }
      const newestFirst = [...ids].reverse()
      const all = await store.list('tenant_a')
      expect(all.data.map((j) => j.id)).toEqual(newestFirst)
      expect(all.hasMore).toBe(false)

      const seen: string[] = []
      let after: string | undefined
      const pages: boolean[] = []
      for (;;) {
        const page = await store.list('tenant_a', { limit: 3, after })
        seen.push(...page.data.map((j) => j.id))
        pages.push(page.hasMore)
        if (!page.hasMore) break
        after = page.data.at(-1)?.id
      }
      expect(seen).toEqual(newestFirst)
      expect(pages).toEqual([true, true, false])
      const exact = await store.list('tenant_a', { limit: 7 })
      expect(exact.hasMore).toBe(false)
      expect((await store.list('tenant_a', { limit: 6 })).hasMore).toBe(true)
      expect((await store.list('tenant_c')).data).toEqual([])
    })

    it('lists by kind and never leaks through another tenant’s cursor', async () => {
      const { store } = await setup()
      const a1 = await store.create(job({ kind: 'batch' }))
      await sleep(2)
      await store.create(job({ kind: 'generation' }))
      await sleep(2)
      const a3 = await store.create(job({ kind: 'batch' }))
      const b1 = await store.create(job({ tenant: 'tenant_b', kind: 'batch' }))
      const batches = await store.list('tenant_a', { kind: 'batch' })
      expect(batches.data.map((j) => j.id)).toEqual([a3.id, a1.id])
      expect(batches.data.every((j) => j.tenant === 'tenant_a')).toBe(true)
      const viaForeign = await store.list('tenant_a', { after: b1.id })
      expect(viaForeign.data.every((j) => j.tenant === 'tenant_a')).toBe(true)
    })

    it('purgeFinished deletes finished jobs ended before the cutoff, oldest first, and nothing else', async () => {
      const made = await setup()
      const { store } = made
      const queued = await store.create(job())
      const running = await store.create(job())
      await store.transition(running.id, 'running')
      const finish = async (over: Partial<NewJob>, to: 'succeeded' | 'failed' | 'canceled') => {
        const rec = await store.create(job(over))
        if (to === 'canceled') return (await store.requestCancel(rec.tenant, rec.id))!
        await store.transition(rec.id, 'running')
        return store.transition(
          rec.id,
          to,
          to === 'failed' ? { error: { message: 'x', code: 'x' } } : { output: 'ok' },
        )
      }
      const first = await finish({}, 'succeeded')
      await sleep(3)
      const second = await finish({ tenant: 'tenant_b' }, 'failed')
      await sleep(3)
      const third = await finish({}, 'canceled')
      const kept = await finish({ kind: 'fine_tune' }, 'succeeded')
      await sleep(3)
      const cutoff = Date.now()
      await sleep(3)
      const later = await finish({}, 'succeeded')

      // Before any of them ended: nothing goes.
      expect(await store.purgeFinished({ finishedBefore: first.finishedAt! })).toEqual([])
      // A limit takes the oldest first.
      expect(
        await store.purgeFinished({ finishedBefore: cutoff, keepKinds: ['fine_tune'], limit: 1 }),
      ).toEqual([first.id])
      expect(await store.getById(first.id)).toBeNull()
      const rest = await store.purgeFinished({ finishedBefore: cutoff, keepKinds: ['fine_tune'] })
      expect(rest.sort()).toEqual([second.id, third.id].sort())
      for (const id of [first.id, second.id, third.id]) expect(await store.getById(id)).toBeNull()
      // Another client sees them gone; the listing skips them.
      const other = await connect(made)
      expect(await other.get('tenant_b', second.id)).toBeNull()
      const listed = (await store.list('tenant_a', { limit: 100 })).data.map((j) => j.id)
      expect(listed.sort()).toEqual([queued.id, running.id, kept.id, later.id].sort())
      expect((await store.list('tenant_b')).data).toEqual([])
      // Unfinished jobs, kept kinds and jobs ended after the cutoff stay; a second purge finds nothing.
      expect(await store.purgeFinished({ finishedBefore: cutoff, keepKinds: ['fine_tune'] })).toEqual([])
      expect((await store.getById(queued.id))?.state).toBe('queued')
      expect((await store.getById(running.id))?.state).toBe('running')
      expect((await store.getById(kept.id))?.state).toBe('succeeded')
      expect((await store.getById(later.id))?.state).toBe('succeeded')
      // Without keepKinds the fine-tune goes too; far in the future, every finished job goes.
      expect((await store.purgeFinished({ finishedBefore: Date.now() + 60_000 })).sort()).toEqual(
        [kept.id, later.id].sort(),
      )
      expect((await store.getById(queued.id))?.state).toBe('queued')
      expect((await store.getById(running.id))?.state).toBe('running')
    })

    it('a second client sees the same records', async () => {
      const made = await setup()
      const other = await connect(made)
      const rec = await made.store.create(job())
      expect(await other.get('tenant_a', rec.id)).toEqual(rec)
      await other.transition(rec.id, 'running')
      expect((await made.store.getById(rec.id))?.state).toBe('running')
    })
  })
}
