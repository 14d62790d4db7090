/**
 * /v1/fine_tuning/jobs on the test edge (in-memory adapters, no worker): what
 * creating a job writes (record, queue message, first event), request
 * validation, scopes, tenant scoping, status mapping, events and checkpoint
 * paging, cancel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manifestKey } from '../../core/model-manifest.js'
import type { JobRecord } from '../../core/ports/job-store.js'
import { createFile } from '../../core/records/files.js'
import {
  appendEvent,
  type FineTuneInput,
  writeCheckpointMeta,
  writeStatus,
} from '../../core/records/fine-tunes.js'
import { makeTestEdge, manifest, type TestEdge } from '../../test/helpers/edge-harness.js'

let e: TestEdge
let ftKey: string
let otherKey: string

beforeAll(async () => {
  e = await makeTestEdge({ worker: false })
  ftKey = await e.key('t1', ['fine-tune'])
  otherKey = await e.key('t2', ['fine-tune'])
  await createFile(e.deps.store, 't1', {
    id: 'file-train',
    filename: 't.jsonl',
    purpose: 'fine-tune',
    content: '{}',
  })
  await createFile(e.deps.store, 't1', {
    id: 'file-batch',
    filename: 'b.jsonl',
    purpose: 'batch',
    content: '{}',
  })
})
afterAll(() => e.close())

const req = (path: string, key: string, body?: unknown) =>
  e.app.request(path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...e.auth(key), 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })

type Job = {
  id: string
  status: string
  error: unknown
  fine_tuned_model: string | null
  trained_tokens: number | null
  hyperparameters: { n_epochs: number | 'auto' }
}

async function createJob(body: Record<string, unknown> = {}): Promise<Job> {
  const res = await req('/v1/fine_tuning/jobs', ftKey, {
    model: 'echo-1',
    training_file: 'file-train',
    ...body,
  })
  expect(res.status).toBe(200)
  return (await res.json()) as Job
}

describe('POST /v1/fine_tuning/jobs', () => {
  it('creates a fine_tune job record with resolved hyperparameters, enqueues it and logs the first event', async () => {
    const before = (await e.deps.queue.stats()).visible
    const res = await req('/v1/fine_tuning/jobs', ftKey, {
      model: 'echo-1',
      training_file: 'file-train',
      suffix: 'my-model',
      seed: 7,
      hyperparameters: { n_epochs: 2, batch_size: 'auto' },
      method: { type: 'supervised', supervised: { hyperparameters: { lora_rank: 4 } } },
      metadata: { team: 'a' },
    })
    expect(res.status).toBe(200)
    const job = (await res.json()) as Job & Record<string, unknown>
    expect(job).toMatchObject({
      object: 'fine_tuning.job',
      model: 'echo-1',
      status: 'queued',
      fine_tuned_model: null,
      organization_id: 't1',
      training_file: 'file-train',
      validation_file: null,
      seed: 7,
      user_provided_suffix: 'my-model',
      hyperparameters: {
        n_epochs: 2,
        batch_size: 4,
        learning_rate_multiplier: 1,
        lora_rank: 4,
        seq_len: 1024,
      },
      metadata: { team: 'a' },
      error: null,
    })
    expect(job.id).toMatch(/^ftjob-/)
    const rec = (await e.deps.jobs.get('t1', job.id)) as JobRecord
    expect(rec.kind).toBe('fine_tune')
    const input = rec.input as FineTuneInput
    expect(input.fine_tuned_model).toBe(`ft:echo-1:t1:my-model:${job.id.slice('ftjob-'.length).slice(-12)}`)
    expect((await e.deps.queue.stats()).visible).toBe(before + 1)
    const events = (await (await req(`/v1/fine_tuning/jobs/${job.id}/events`, ftKey)).json()) as {
      data: { message: string }[]
    }
    expect(events.data.map((x) => x.message)).toEqual([
      'Fine-tuning job queued.',
      `Created fine-tuning job: ${job.id}`,
    ])
  })

  it.each([
    [{ model: 'nope' }, 404, 'model_not_found'],
    [{ model: 'private-t2' }, 404, 'model_not_found'],
    [{ training_file: 'file-missing' }, 400, 'file_not_found'],
    [{ training_file: 'file-batch' }, 400, 'invalid_file_purpose'],
    [{ validation_file: 'file-missing' }, 400, 'file_not_found'],
    [{ suffix: 'bad suffix!' }, 400, null],
    [{ hyperparameters: { n_epochs: 0 } }, 400, null],
    [{ webhook: 'http://127.0.0.1/hook' }, 422, 'webhook_url_not_allowed'],
  ])('rejects %j with %i', async (over, status, code) => {
    const res = await req('/v1/fine_tuning/jobs', ftKey, {
      model: 'echo-1',
      training_file: 'file-train',
      ...over,
    })
    expect(res.status).toBe(status)
    const body = (await res.json()) as { error: { code: string | null } }
    if (code) expect(body.error.code).toBe(code)
  })

  it('refuses a job beyond PGPT_MAX_FINE_TUNE_STEPS with a 400 too_many_steps; auto epochs only when one epoch is beyond', async () => {
    const capped = await makeTestEdge({ worker: false, env: { PGPT_MAX_FINE_TUNE_STEPS: '10' } })
    try {
      const key = await capped.key('t1', ['fine-tune'])
      const lines = (n: number) => Array.from({ length: n }, () => '{}').join('\n')
      await createFile(capped.deps.store, 't1', {
        id: 'file-twenty',
        filename: 't.jsonl',
        purpose: 'fine-tune',
        content: lines(20),
      })
      await createFile(capped.deps.store, 't1', {
        id: 'file-sixty',
        filename: 't.jsonl',
        purpose: 'fine-tune',
        content: lines(60),
      })
      const create = (training_file: string, hyperparameters: Record<string, unknown>) =>
        capped.app.request('/v1/fine_tuning/jobs', {
          method: 'POST',
          headers: { ...capped.auth(key), 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'echo-1', training_file, hyperparameters }),
        })
      // 2 epochs × 20 examples / 4 = 10 steps: at the cap.
      expect((await create('file-twenty', { n_epochs: 2, batch_size: 4 })).status).toBe(200)
      const over = await create('file-twenty', { n_epochs: 3, batch_size: 4 })
      expect(over.status).toBe(400)
      const e1 = ((await over.json()) as { error: { code: string; param: string; message: string } }).error
      expect(e1).toMatchObject({ code: 'too_many_steps', param: 'hyperparameters.n_epochs' })
      expect(e1.message).toContain('15 training steps')
      expect(e1.message).toContain('limit of 10')
      // 'auto' is lowered by the worker; refused only when one epoch (60 / 4 = 15 steps) is beyond.
      expect((await create('file-twenty', { batch_size: 4 })).status).toBe(200)
      const big = await create('file-sixty', { batch_size: 4 })
      expect(big.status).toBe(400)
      expect(((await big.json()) as { error: { code: string; param: string } }).error).toMatchObject({
        code: 'too_many_steps',
        param: 'training_file',
      })
    } finally {
      await capped.close()
    }
  })

  it('refuses a job beyond PGPT_MAX_ACTIVE_FINE_TUNES with a 429; a job that ends frees its place', async () => {
    const capped = await makeTestEdge({ worker: false, env: { PGPT_MAX_ACTIVE_FINE_TUNES: '2' } })
    try {
      const key = await capped.key('t1', ['fine-tune'])
      for (const tenant of ['t1', 't2'])
        await createFile(capped.deps.store, tenant, {
          id: 'file-train',
          filename: 't.jsonl',
          purpose: 'fine-tune',
          content: '{}',
        })
      const create = (secret = key) =>
        capped.app.request('/v1/fine_tuning/jobs', {
          method: 'POST',
          headers: { ...capped.auth(secret), 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'echo-1', training_file: 'file-train' }),
        })
      const first = await create()
      expect(first.status).toBe(200)
      const a = (await first.json()) as Job
      expect((await create()).status).toBe(200)
      const third = await create()
      expect(third.status).toBe(429)
      expect(third.headers.get('retry-after')).not.toBeNull()
      const err = ((await third.json()) as { error: { code: string; message: string } }).error
      expect(err.code).toBe('fine_tune_limit_exceeded')
      expect(err.message).toContain('2 fine-tuning jobs queued or running, the limit (2)')
      // Another tenant has its own.
      expect((await create(await capped.key('t2', ['fine-tune']))).status).toBe(200)
      // Cancelled (a queued job at once): its place is free, and only one.
      const cancel = await capped.app.request(`/v1/fine_tuning/jobs/${a.id}/cancel`, {
        method: 'POST',
        headers: capped.auth(key),
      })
      expect(cancel.status).toBe(200)
      expect((await create()).status).toBe(200)
      expect((await create()).status).toBe(429)
    } finally {
      await capped.close()
    }
  })

  it('needs the fine-tune scope', async () => {
    const res = await req('/v1/fine_tuning/jobs', e.keys.generate, {
      model: 'echo-1',
      training_file: 'file-train',
    })
    expect(res.status).toBe(403)
  })
})

describe('reading and cancelling', () => {
  it('maps states, shows status while running, and scopes everything to the tenant', async () => {
    const job = await createJob()
    await e.deps.jobs.transition(job.id, 'running')
    await writeStatus(e.deps.store, job.id, {
      phase: 'validating_files',
      step: 0,
      total_steps: null,
      trained_tokens: 0,
    })
    expect(((await (await req(`/v1/fine_tuning/jobs/${job.id}`, ftKey)).json()) as Job).status).toBe(
      'validating_files',
    )
    const started = Math.floor(Date.now() / 1000) - 30
    await writeStatus(e.deps.store, job.id, {
      phase: 'running',
      step: 4,
      total_steps: 10,
      trained_tokens: 768,
      run_started_at: started,
      run_start_step: 1,
    })
    const running = (await (await req(`/v1/fine_tuning/jobs/${job.id}`, ftKey)).json()) as Job & {
      estimated_finish: number
    }
    expect(running).toMatchObject({ status: 'running', trained_tokens: 768 })
    // 3 steps took ~30 s: 6 more take ~60 s.
    expect(running.estimated_finish - (started + 30)).toBeGreaterThanOrEqual(59)
    expect(running.estimated_finish - (started + 30)).toBeLessThanOrEqual(62)
    for (const path of ['', '/events', '/checkpoints'])
      expect((await req(`/v1/fine_tuning/jobs/${job.id}${path}`, otherKey)).status).toBe(404)
    expect((await req(`/v1/fine_tuning/jobs/${job.id}/cancel`, otherKey, {})).status).toBe(404)

    // A running job: cancel is requested; the worker stops it.
    const cancel = (await (await req(`/v1/fine_tuning/jobs/${job.id}/cancel`, ftKey, {})).json()) as Job
    expect(cancel.status).toBe('running')
    expect((await e.deps.jobs.get('t1', job.id))?.cancelRequested).toBe(true)
    await e.deps.jobs.transition(job.id, 'canceled')
    expect(((await (await req(`/v1/fine_tuning/jobs/${job.id}`, ftKey)).json()) as Job).status).toBe(
      'cancelled',
    )
    expect((await req(`/v1/fine_tuning/jobs/${job.id}/cancel`, ftKey, {})).status).toBe(400)
  })

  it('a queued job is cancelled at once', async () => {
    const job = await createJob()
    const res = (await (await req(`/v1/fine_tuning/jobs/${job.id}/cancel`, ftKey, {})).json()) as Job
    expect(res.status).toBe('cancelled')
  })

  it('a model listing read before the fine-tune was published lists it once the job is seen succeeded', async () => {
    const ids = async () =>
      ((await (await req('/v1/models', ftKey)).json()) as { data: Array<{ id: string }> }).data.map(
        (m) => m.id,
      )
    const job = await createJob()
    const name = 'ft:echo-1:t1::listed'
    expect(await ids()).not.toContain(name) // the edge now reuses this listing for seconds
    // What the worker does: publish the model, then mark the job succeeded.
    await e.deps.store.put(manifestKey(name), JSON.stringify(manifest(name, 't1')))
    await e.deps.jobs.transition(job.id, 'running')
    await e.deps.jobs.transition(job.id, 'succeeded', {
      output: { fine_tuned_model: name, trained_tokens: 1, steps: 1, base_valid_loss: 2, valid_loss: 1 },
    })
    expect(await ids()).not.toContain(name) // still the cached listing
    expect(((await (await req(`/v1/fine_tuning/jobs/${job.id}`, ftKey)).json()) as Job).status).toBe(
      'succeeded',
    )
    expect(await ids()).toContain(name)
  })

  it('a succeeded job shows its model and metrics; a failed one its error', async () => {
    const ok = await createJob()
    // n_epochs 'auto' is the worker's to resolve from the file's size: 'auto' until it has.
    expect(ok.hyperparameters.n_epochs).toBe('auto')
    await e.deps.jobs.transition(ok.id, 'running')
    await e.deps.jobs.transition(ok.id, 'succeeded', {
      output: {
        fine_tuned_model: 'ft:echo-1:t1::x',
        trained_tokens: 512,
        steps: 2,
        base_valid_loss: 5,
        valid_loss: 3,
        n_epochs: 10,
      },
    })
    expect(await (await req(`/v1/fine_tuning/jobs/${ok.id}`, ftKey)).json()).toMatchObject({
      status: 'succeeded',
      fine_tuned_model: 'ft:echo-1:t1::x',
      trained_tokens: 512,
      metrics: { base_valid_loss: 5, valid_loss: 3 },
      hyperparameters: { n_epochs: 10 },
      method: { supervised: { hyperparameters: { n_epochs: 10 } } },
    })
    const bad = await createJob()
    await e.deps.jobs.transition(bad.id, 'running')
    await e.deps.jobs.transition(bad.id, 'failed', { error: { code: 'quality_gate', message: 'worse' } })
    expect(await (await req(`/v1/fine_tuning/jobs/${bad.id}`, ftKey)).json()).toMatchObject({
      status: 'failed',
      fine_tuned_model: null,
      error: { code: 'quality_gate', message: 'worse', param: null },
    })
  })

  it('pages events newest first with after/limit, and checkpoints newest first', async () => {
    const job = await createJob()
    for (let i = 1; i <= 6; i++) await appendEvent(e.deps.store, job.id, { message: `Step ${i}/6` })
    const seen: string[] = []
    let after: string | undefined
    for (;;) {
      const page = (await (
        await req(`/v1/fine_tuning/jobs/${job.id}/events?limit=3${after ? `&after=${after}` : ''}`, ftKey)
      ).json()) as { data: { id: string; message: string }[]; has_more: boolean }
      seen.push(...page.data.map((x) => x.message))
      if (!page.has_more) break
      after = page.data.at(-1)!.id
    }
    expect(seen).toEqual([
      'Step 6/6',
      'Step 5/6',
      'Step 4/6',
      'Step 3/6',
      'Step 2/6',
      'Step 1/6',
      'Fine-tuning job queued.',
      `Created fine-tuning job: ${job.id}`,
    ])

    for (const step of [2, 4])
      await writeCheckpointMeta(e.deps.store, job.id, {
        object: 'fine_tuning.job.checkpoint',
        id: `ftckpt-${step}`,
        created_at: 1,
        fine_tuned_model_checkpoint: `ft:x:ckpt-step-${step}`,
        fine_tuning_job_id: job.id,
        step_number: step,
        metrics: { step, train_loss: 1 },
        trained_tokens: 0,
        base_valid_loss: null,
      })
    const ck = (await (await req(`/v1/fine_tuning/jobs/${job.id}/checkpoints?limit=1`, ftKey)).json()) as {
      data: { id: string; step_number: number }[]
      has_more: boolean
    }
    expect(ck).toMatchObject({ data: [{ id: 'ftckpt-4', step_number: 4 }], has_more: true })
    const next = (await (
      await req(`/v1/fine_tuning/jobs/${job.id}/checkpoints?limit=1&after=ftckpt-4`, ftKey)
    ).json()) as { data: { id: string }[]; has_more: boolean }
    expect(next).toMatchObject({ data: [{ id: 'ftckpt-2' }], has_more: false })
  })

  it('lists only fine-tuning jobs of the tenant', async () => {
    const list = (await (await req('/v1/fine_tuning/jobs?limit=100', ftKey)).json()) as {
      data: { id: string; object: string }[]
    }
    expect(list.data.length).toBeGreaterThanOrEqual(5)
    expect(list.data.every((j) => j.object === 'fine_tuning.job')).toBe(true)
    expect(
      ((await (await req('/v1/fine_tuning/jobs', otherKey)).json()) as { data: unknown[] }).data,
    ).toEqual([])
  })
})

describe('OpenAPI', () => {
  it('documents the fine-tuning routes', async () => {
    const doc = (await (await e.app.request('/openapi.json')).json()) as { paths: Record<string, object> }
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/fine_tuning/jobs',
        '/v1/fine_tuning/jobs/{fine_tuning_job_id}',
        '/v1/fine_tuning/jobs/{fine_tuning_job_id}/events',
        '/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints',
        '/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel',
      ]),
    )
  })
})

describe('files in use and fine-tuned models', () => {
  const del = (path: string, key: string) => e.app.request(path, { method: 'DELETE', headers: e.auth(key) })

  it('a file used by a queued or running fine-tuning job or an unfinished batch cannot be deleted (409)', async () => {
    for (const id of ['file-inuse', 'file-inuseval'])
      await createFile(e.deps.store, 't1', {
        id,
        filename: `${id}.jsonl`,
        purpose: 'fine-tune',
        content: '{}',
      })
    const job = await createJob({ training_file: 'file-inuse', validation_file: 'file-inuseval' })
    for (const id of ['file-inuse', 'file-inuseval']) {
      const res = await del(`/v1/files/${id}`, ftKey)
      expect(res.status).toBe(409)
      const body = (await res.json()) as { error: { message: string; code: string; type: string } }
      expect(body.error).toMatchObject({ code: 'file_in_use', type: 'invalid_request_error' })
      expect(body.error.message).toContain(`the fine-tuning job '${job.id}' (queued)`)
    }
    // Another tenant still gets a 404, not a hint that the file exists.
    expect((await del('/v1/files/file-inuse', otherKey)).status).toBe(404)
    await req(`/v1/fine_tuning/jobs/${job.id}/cancel`, ftKey, {})
    expect(await (await del('/v1/files/file-inuse', ftKey)).json()).toEqual({
      id: 'file-inuse',
      object: 'file',
      deleted: true,
    })

    const batchKey = await e.key('t1', ['batch'])
    const line = JSON.stringify({
      custom_id: 'r1',
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'echo-1', prompt: 'hi' },
    })
    await createFile(e.deps.store, 't1', {
      id: 'file-batchin',
      filename: 'b.jsonl',
      purpose: 'batch',
      content: line,
    })
    const created = await req('/v1/batches', batchKey, {
      input_file_id: 'file-batchin',
      endpoint: '/v1/completions',
      completion_window: '24h',
    })
    expect(created.status).toBe(200)
    const batch = (await created.json()) as { id: string; status: string }
    const res = await del('/v1/files/file-batchin', batchKey)
    expect(res.status).toBe(409)
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain(
      `the batch '${batch.id}' (${batch.status})`,
    )
  })

  it('DELETE /v1/models/{id} deletes the tenant’s own fine-tuned model only', async () => {
    const id = 'ft:echo-1:t1:mine:abc123'
    await e.deps.store.put(`models/${id}/adapter/adapter_model.safetensors`, new Uint8Array(8))
    await e.deps.store.put(
      `models/${id}/manifest.json`,
      JSON.stringify({
        id,
        owner: 't1',
        created: 1_700_000_000,
        context_length: 256,
        files: [{ path: 'adapter/adapter_model.safetensors', size: 8, sha256: 'a'.repeat(64) }],
        source: 'fine-tune',
        base_model: 'echo-1',
      }),
    )
    const path = `/v1/models/${encodeURIComponent(id)}`
    // Another tenant: no such model. A key without the fine-tune scope: forbidden.
    expect((await del(path, otherKey)).status).toBe(404)
    expect((await del(path, e.keys.generate)).status).toBe(403)
    // Base models (everyone's, or another tenant's) cannot be deleted by a tenant.
    const base = await del('/v1/models/echo-1', ftKey)
    expect(base.status).toBe(403)
    expect(((await base.json()) as { error: { code: string } }).error.code).toBe('model_not_deletable')
    expect((await del('/v1/models/private-t2', ftKey)).status).toBe(404)
    expect((await del('/v1/models/nope', ftKey)).status).toBe(404)

    expect((await req(path, ftKey)).status).toBe(200)
    const res = await del(path, ftKey)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ id, object: 'model', deleted: true })
    expect((await req(path, ftKey)).status).toBe(404)
    const listed = (await (await req('/v1/models', ftKey)).json()) as { data: { id: string }[] }
    expect(listed.data.map((m) => m.id)).not.toContain(id)
    expect((await e.deps.store.list(`models/${id}/`)).objects).toEqual([])
    expect((await del(path, ftKey)).status).toBe(404)
    expect((await req('/v1/models/echo-1', ftKey)).status).toBe(200)
  })
})
