/**
 * Fine-tuning end to end over real pieces, driven by the official `openai`
 * client: the edge on @hono/node-server (local profile: SQLite queue and job
 * store, folder store), a worker PROCESS running the `fine_tune` and
 * `generation` handlers, and the bundled prometheus-mini as the base.
 *
 * Upload a small domain file (capital cities) through the Files API, create a
 * job, page through its events (falling training loss, a validation loss
 * below the base model's), get the succeeded job with `fine_tuned_model`,
 * generate with that model (it answers in the domain's form; the base does not),
 * train a second fine-tune of the same base and serve both from the one
 * worker as adapters beside the base (loaded once; each answers as its merged
 * model does), cancel a job mid-training (its file cannot be deleted while it
 * runs), delete a fine-tuned model, and check that another tenant sees none
 * of the file, the job or the model.
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { isAdapterManifest, readManifest } from '../../core/model-manifest.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { readModelFolder, writeModelFolder } from '../../models/folder.js'
import { capitalsJsonl, MINI_DIR, templateCorpus } from '../../models/train/fixtures.js'
import { ADAPTER_FILES, loadAdapter, mergeLora } from '../../models/train/lora.js'
import { type Receiver, startReceiver } from '../helpers/webhook-receiver.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'fine-tuning-internal-token-0123456789'
const PROMPT = 'Q: What is the capital of France?\nA:'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let workerPort: number
let acme: OpenAI
let other: OpenAI
let receiver: Receiver

beforeAll(async () => {
  h = createHarness()
  receiver = await startReceiver()
  const config = parseConfig({
    // These tests poll; rate limits have their own tests.
    PGPT_RATE_LIMIT_RPM: '1000000',
    PGPT_DATA_DIR: h.dir,
    PGPT_LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PGPT_INTERNAL_TOKEN: TOKEN,
    PGPT_WEBHOOK_ALLOW_PRIVATE: 'true',
  })
  edge = await startEdge({
    config,
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  await publishModelFolder(edge.deps.store, MINI_DIR, {
    id: 'prometheus-mini',
    owner: null,
    contextLength: 256,
    source: 'bundled',
  })
  const key = async (tenant: string) =>
    (await createKey(edge.deps.keys, { tenant, name: 'e2e', scopes: ['generate', 'fine-tune'] })).secret
  const client = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${edge.url}/v1`, maxRetries: 0 })
  acme = client(await key('acme'))
  other = client(await key('globex'))
  worker = await h.startEdgeWorker('generation,fine_tune', edge.url, TOKEN, {
    PGPT_VISIBILITY_TIMEOUT_S: '30',
    PGPT_LOG_LEVEL: 'info',
    PGPT_WORKER_METRICS_PORT: '0',
  })
  workerPort = (await worker.waitForLog((l) => l.msg === 'worker /metrics and /health listening'))
    .port as number
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await receiver?.close()
  await h?.cleanup()
})

const upload = async (name: string, text: string) =>
  acme.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'fine-tune' })

const settle = (id: string, timeoutMs = 120_000) =>
  waitFor(
    async () => {
      const j = await acme.fineTuning.jobs.retrieve(id)
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) ? j : null
    },
    timeoutMs,
    `fine-tuning job ${id}`,
  )

/** Every event of a job, oldest first, paging with `after` (10 a page). */
async function allEvents(id: string) {
  const out: OpenAI.FineTuning.FineTuningJobEvent[] = []
  for await (const e of acme.fineTuning.jobs.listEvents(id, { limit: 10 })) out.push(e)
  return out.reverse()
}

const complete = (client: OpenAI, model: string) =>
  client.completions.create({ model, prompt: PROMPT, max_tokens: 10, temperature: 0 })

/** Greedy completion with logprobs, past the response cache (so the worker answers every time). */
const fresh = (model: string, prompt = PROMPT) =>
  acme.completions.create(
    { model, prompt, max_tokens: 8, temperature: 0, logprobs: 1 },
    { headers: { 'cache-control': 'no-cache' } },
  )

/** The capitals domain with another answer form: the bare city. */
const shortCapitalsJsonl = (n: number, seed: number) =>
  capitalsJsonl(n, seed)
    .split('\n')
    .map((line) => {
      const { prompt, completion } = JSON.parse(line) as { prompt: string; completion: string }
      return JSON.stringify({ prompt, completion: ` ${/ is (\w+)\.$/.exec(completion)![1]}.` })
    })
    .join('\n')

/** Merges a published fine-tune's adapter into the base here, and publishes the result as a model of its own. */
async function publishMerged(ft: string, id: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pgpt-e2e-merged-'))
  for (const f of [ADAPTER_FILES.weights, ADAPTER_FILES.config])
    await writeFile(join(dir, f), (await edge.deps.store.get(`models/${ft}/adapter/${f}`))!)
  const { adapters, lora } = await loadAdapter(dir)
  const base = await readModelFolder(MINI_DIR)
  await writeModelFolder(join(dir, 'model'), {
    ...base,
    weights: mergeLora(base.config, base.weights, adapters, lora),
  })
  await publishModelFolder(edge.deps.store, join(dir, 'model'), { id, owner: 'acme', contextLength: 256 })
}

describe('fine-tuning through the API (openai client, edge, worker process)', () => {
  let jobId: string
  let fileId: string
  let ftModel: string

  it('trains a LoRA fine-tune whose loss falls and publishes ft:<base>:<tenant>:<suffix>:<id>', async () => {
    const train = await upload('capitals.jsonl', capitalsJsonl(96, 1))
    const valid = await upload('capitals-valid.jsonl', capitalsJsonl(24, 2))
    fileId = train.id
    const created = await acme.fineTuning.jobs.create({
      model: 'prometheus-mini',
      training_file: train.id,
      validation_file: valid.id,
      suffix: 'capitals',
      seed: 1,
      hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 1 },
      // Extensions: a webhook, as for other jobs.
      webhook: receiver.url,
      webhook_events_filter: ['completed'],
    } as OpenAI.FineTuning.JobCreateParams)
    jobId = created.id
    expect(created).toMatchObject({
      object: 'fine_tuning.job',
      model: 'prometheus-mini',
      status: 'queued',
      fine_tuned_model: null,
      training_file: train.id,
      validation_file: valid.id,
      hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 1 },
    })
    const done = await settle(jobId)
    expect(done.error).toBeNull()
    expect(done.status).toBe('succeeded')
    ftModel = done.fine_tuned_model!
    expect(ftModel).toMatch(/^ft:prometheus-mini:acme:capitals:[a-z0-9]+$/)
    expect(done.trained_tokens).toBeGreaterThan(0)
    expect(done.finished_at).toBeGreaterThanOrEqual(done.created_at)

    // Events, paged: created → validating → steps with falling loss → validation → model → done.
    const events = await allEvents(jobId)
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length)
    expect(events.length).toBeGreaterThan(20)
    const messages = events.map((e) => e.message)
    expect(messages[0]).toBe(`Created fine-tuning job: ${jobId}`)
    expect(messages[1]).toBe('Fine-tuning job queued.')
    expect(messages[2]).toBe(`Validating training file: ${train.id}`)
    expect(messages).toContain(`New fine-tuned model created: ${ftModel}`)
    expect(messages.at(-1)).toBe('The job has successfully completed.')
    expect(messages.some((m) => m.startsWith('Checkpoint created at step'))).toBe(true)
    const losses = events
      .filter((e) => e.type === 'metrics' && (e.data as { train_loss?: number }).train_loss !== undefined)
      .map((e) => (e.data as { train_loss: number }).train_loss)
    expect(losses.length).toBeGreaterThanOrEqual(20)
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)) - 1)
    const validation = events.find((e) => e.message.startsWith('Validation loss'))!.data as {
      valid_loss: number
      base_valid_loss: number
    }
    expect(validation.valid_loss).toBeLessThan(validation.base_valid_loss - 1)

    const checkpoints = await acme.fineTuning.jobs.checkpoints.list(jobId)
    expect(checkpoints.data.length).toBeGreaterThanOrEqual(1)
    expect(checkpoints.data[0].fine_tuned_model_checkpoint).toMatch(
      /^ft:prometheus-mini:acme:capitals:.+:ckpt-step-\d+$/,
    )
    const steps = checkpoints.data.map((c) => c.step_number)
    expect([...steps].sort((a, b) => b - a)).toEqual(steps)

    // The completed webhook (signed by the worker; its body is the job record).
    await waitFor(() => receiver.received.length >= 1, 10_000, 'the completed webhook')
    expect(JSON.parse(receiver.received[0].body)).toMatchObject({
      id: jobId,
      kind: 'fine_tune',
      status: 'succeeded',
      output: { fine_tuned_model: ftModel },
    })

    const list = await acme.fineTuning.jobs.list({ limit: 10 })
    expect(list.data.map((j) => j.id)).toContain(jobId)
  }, 180_000)

  it('the fine-tuned model is listed for its tenant and answers in the domain (completions and chat)', async () => {
    const models = (await acme.models.list()).data.map((m) => m.id)
    expect(models).toContain(ftModel)
    expect(models).toContain('prometheus-mini')
    const tuned = await complete(acme, ftModel)
    const base = await complete(acme, 'prometheus-mini')
    expect(tuned.model).toBe(ftModel)
    // The answers of the domain start " The capital of …"; the base model's do not.
    expect(tuned.choices[0].text).toMatch(/^ The capital of /)
    expect(base.choices[0].text).not.toMatch(/^ The capital of /)

    // Served log-likelihood of the domain's answer prefix: the fine-tune's greedy tokens carry
    // their exact logprobs; for the base, each token's logprob is at most its top-5 entry (or
    // the smallest top-5 logprob when it is not among them): an upper bound.
    const ft = (
      await acme.completions.create({
        model: ftModel,
        prompt: PROMPT,
        max_tokens: 3,
        temperature: 0,
        logprobs: 1,
      })
    ).choices[0].logprobs!
    expect(ft.tokens!.join('')).toBe(' The capital of')
    const ftLogLik = ft.token_logprobs!.reduce((a, b) => a + b, 0)
    let baseBound = 0
    for (let i = 0; i < ft.tokens!.length; i++) {
      const r = await acme.completions.create({
        model: 'prometheus-mini',
        prompt: PROMPT + ft.tokens!.slice(0, i).join(''),
        max_tokens: 1,
        temperature: 0,
        logprobs: 5,
      })
      const top = r.choices[0].logprobs!.top_logprobs![0] as Record<string, number>
      baseBound += top[ft.tokens![i]] ?? Math.min(...Object.values(top))
    }
    expect(ftLogLik).toBeGreaterThan(baseBound + 1)
    const chat = await acme.chat.completions.create({
      model: ftModel,
      messages: [{ role: 'user', content: 'What is the capital of Italy?' }],
      max_tokens: 8,
    })
    expect(chat.choices[0].message.role).toBe('assistant')
    expect(typeof chat.choices[0].message.content).toBe('string')
  }, 60_000)

  it('serves a second fine-tune of the same base from the same worker: adapters beside the base, loaded once', async () => {
    const train = await upload('capitals-short.jsonl', shortCapitalsJsonl(96, 3))
    const valid = await upload('capitals-short-valid.jsonl', shortCapitalsJsonl(24, 4))
    const created = await acme.fineTuning.jobs.create({
      model: 'prometheus-mini',
      training_file: train.id,
      validation_file: valid.id,
      suffix: 'short',
      seed: 3,
      hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 1 },
    })
    const done = await settle(created.id)
    expect(done.error).toBeNull()
    const ftShort = done.fine_tuned_model!
    expect(ftShort).toMatch(/^ft:prometheus-mini:acme:short:[a-z0-9]+$/)
    const validation = (await allEvents(created.id)).find((e) => e.message.startsWith('Validation loss'))!
      .data as { valid_loss: number; base_valid_loss: number }
    expect(validation.valid_loss).toBeLessThan(validation.base_valid_loss)

    // Both are published as adapters (no weights or graph of their own), for acme only.
    for (const id of [ftModel, ftShort])
      expect(isAdapterManifest((await readManifest(edge.deps.store, id))!)).toBe(true)
    expect((await acme.models.list()).data.map((m) => m.id)).toEqual(
      expect.arrayContaining([ftModel, ftShort]),
    )
    expect((await other.models.list()).data.map((m) => m.id)).not.toContain(ftShort)

    // Each answers in its own form, the base in neither.
    const alone = {
      base: await fresh('prometheus-mini'),
      capitals: await fresh(ftModel),
      short: await fresh(ftShort),
    }
    const text = (r: OpenAI.Completions.Completion) => r.choices[0].text
    expect(text(alone.capitals)).toMatch(/^ The capital of /)
    expect(text(alone.short)).toMatch(/^ [A-Z][a-z]+\./)
    expect(text(alone.base)).not.toMatch(/^ The capital of /)
    expect(new Set(Object.values(alone).map(text)).size).toBe(3)

    // Requests of the base and of both fine-tunes at once share the worker's batcher; each row keeps its answer.
    const models = ['prometheus-mini', ftModel, ftShort, ftModel, ftShort, 'prometheus-mini']
    const together = await Promise.all(models.map((m) => fresh(m)))
    together.forEach((r, i) => {
      const own = [alone.base, alone.capitals, alone.short][
        [`prometheus-mini`, ftModel, ftShort].indexOf(models[i])
      ]
      expect(r.model).toBe(models[i])
      expect(text(r)).toBe(text(own))
    })

    // Each answers as its adapter merged into the base answers (tokens, and logprobs within float error).
    for (const [ft, merged] of [
      [ftModel, 'merged-capitals'],
      [ftShort, 'merged-short'],
    ]) {
      await publishMerged(ft, merged)
      const a = (await fresh(ft)).choices[0].logprobs!
      const b = (await fresh(merged)).choices[0].logprobs!
      expect(a.tokens).toEqual(b.tokens)
      a.token_logprobs!.forEach((lp, i) => {
        expect(Math.abs(lp - b.token_logprobs![i])).toBeLessThan(1e-3)
      })
    }

    // The worker opened the base once; each fine-tune went into an adapter slot of it.
    const metrics = await (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text()
    expect(metrics).toMatch(/pgpt:model_load_duration_seconds_count\{model="prometheus-mini"\} 1\n/)
    // (The fine-tuning handler downloads bases through a cache of its own, without sessions: not counted.)
    const opened = worker.logs.filter((l) => l.msg === 'model opened with LoRA adapter slots')
    expect(opened.filter((l) => l.model === 'prometheus-mini')).toHaveLength(1)
    const slots = worker.logs.filter((l) => l.msg === 'adapter loaded into a slot')
    expect(slots.every((l) => l.base === 'prometheus-mini')).toBe(true)
    expect(new Set(slots.map((l) => String(l.model).split('@')[0]))).toEqual(new Set([ftModel, ftShort]))
    expect(worker.logs.some((l) => l.msg === 'serving the fine-tune merged into its base')).toBe(false)
  }, 180_000)

  it('another tenant sees neither the file, nor the job, nor the model', async () => {
    await expect(other.files.retrieve(fileId)).rejects.toMatchObject({ status: 404 })
    await expect(other.fineTuning.jobs.retrieve(jobId)).rejects.toMatchObject({ status: 404 })
    await expect(other.fineTuning.jobs.listEvents(jobId)).rejects.toMatchObject({ status: 404 })
    await expect(other.fineTuning.jobs.checkpoints.list(jobId)).rejects.toMatchObject({ status: 404 })
    await expect(other.fineTuning.jobs.cancel(jobId)).rejects.toMatchObject({ status: 404 })
    expect((await other.fineTuning.jobs.list()).data).toEqual([])
    expect((await other.models.list()).data.map((m) => m.id)).not.toContain(ftModel)
    await expect(other.models.retrieve(ftModel)).rejects.toMatchObject({ status: 404 })
    await expect(complete(other, ftModel)).rejects.toMatchObject({ status: 404 })
    // Nor can it train on acme's file.
    await expect(
      other.fineTuning.jobs.create({ model: 'prometheus-mini', training_file: fileId }),
    ).rejects.toMatchObject({ status: 400 })
  }, 30_000)

  it('the quality gate: a fine-tune worse than the base on the validation file fails and is not published', async () => {
    const prose = await upload(
      'prose.jsonl',
      templateCorpus(40, 3)
        .map((t) => JSON.stringify({ prompt: '', completion: t }))
        .join('\n'),
    )
    const created = await acme.fineTuning.jobs.create({
      model: 'prometheus-mini',
      training_file: fileId,
      validation_file: prose.id,
      suffix: 'gate',
      seed: 1,
      hyperparameters: { n_epochs: 3, learning_rate_multiplier: 3, seq_len: 32 } as never,
    })
    const done = await settle(created.id)
    expect(done.status).toBe('failed')
    expect(done.fine_tuned_model).toBeNull()
    expect(done.error).toMatchObject({ code: 'quality_gate' })
    expect(done.error?.message).toMatch(
      /validation loss \(\d+\.\d+\) is worse than the base model's \(\d+\.\d+\)/,
    )
    const models = (await acme.models.list()).data.map((m) => m.id)
    expect(models.some((id) => id.includes(':gate:'))).toBe(false)
    const events = await allEvents(created.id)
    expect(events.at(-1)).toMatchObject({ level: 'error' })
  }, 120_000)

  it('cancels a job mid-training: it stops, ends cancelled, and publishes nothing', async () => {
    const created = await acme.fineTuning.jobs.create({
      model: 'prometheus-mini',
      training_file: fileId,
      suffix: 'cancelme',
      seed: 2,
      hyperparameters: { n_epochs: 50 },
    })
    await waitFor(
      async () => (await allEvents(created.id)).some((e) => /^Step 3\//.test(e.message)),
      60_000,
      'step 3',
    )
    expect((await acme.fineTuning.jobs.retrieve(created.id)).status).toBe('running')
    // Its training file cannot be deleted while it runs.
    await expect(acme.files.delete(fileId)).rejects.toMatchObject({
      status: 409,
      error: { code: 'file_in_use' },
    })
    const canceled = await acme.fineTuning.jobs.cancel(created.id)
    expect(canceled.id).toBe(created.id)
    const done = await settle(created.id, 30_000)
    expect(done.status).toBe('cancelled')
    expect(done.fine_tuned_model).toBeNull()
    const events = await allEvents(created.id)
    expect(events.at(-1)?.message).toBe('Fine-tuning job cancelled.')
    const stepEvents = events.filter((e) => e.message.startsWith('Step '))
    const total = (stepEvents[0].data as { total_steps: number }).total_steps
    expect(stepEvents.length).toBeLessThan(total)
    expect((await acme.models.list()).data.map((m) => m.id).some((id) => id.includes(':cancelme:'))).toBe(
      false,
    )
    // Only fine-tuning jobs are listed (the completions above were jobs too), newest first.
    const listed = (await acme.fineTuning.jobs.list()).data.map((j) => j.id)
    expect(listed).toHaveLength(4)
    expect([listed[0], listed[3]]).toEqual([created.id, jobId])
    // Once nothing uses it, the file can be deleted.
    expect(await acme.files.delete(fileId)).toMatchObject({ id: fileId, deleted: true })
  }, 120_000)

  it('deletes a fine-tuned model (its tenant only; base models cannot be deleted)', async () => {
    await expect(other.models.delete(ftModel)).rejects.toMatchObject({ status: 404 })
    await expect(acme.models.delete('prometheus-mini')).rejects.toMatchObject({ status: 403 })
    expect(await acme.models.delete(ftModel)).toEqual({ id: ftModel, object: 'model', deleted: true })
    expect((await acme.models.list()).data.map((m) => m.id)).not.toContain(ftModel)
    await expect(acme.models.retrieve(ftModel)).rejects.toMatchObject({ status: 404 })
    await expect(complete(acme, ftModel)).rejects.toMatchObject({ status: 404 })
    await expect(acme.models.delete(ftModel)).rejects.toMatchObject({ status: 404 })
  }, 30_000)
})
