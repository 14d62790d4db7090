/**
 * A chat fine-tune answers what it was taught (issue 19: "a fine-tuned model
 * answers nothing in chat"), end to end over real pieces through the official
 * `openai` client: the edge, a worker process running the `fine_tune` and
 * `generation` handlers, and the bundled prometheus-mini as the base.
 *
 * A user uploads a 200-line support FAQ about a fictional product (10 facts,
 * 20 phrasings each, a system message; test/fixtures/product-faq.ts) and
 * starts a job with the default hyperparameters; the fine-tune, served in an
 * adapter slot beside its base, is then asked phrasings of each fact that are
 * in no training line (greedy decoding). Its answers must end at the
 * end-of-turn marker and hold the fact for most questions; the base, which
 * never saw the product, holds none.
 */
import OpenAI, { toFile } from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore } from '../../core/adapters/memory-key-store.js'
import { MemoryUsageStore } from '../../core/adapters/memory-usage-store.js'
import { parseConfig } from '../../core/config.js'
import { publishModelFolder } from '../../core/model-publish.js'
import { createKey } from '../../edge/keys.js'
import { type RunningEdge, startEdge } from '../../edge/node.js'
import { MINI_DIR } from '../../models/train/fixtures.js'
import { FAQ_SYSTEM, faqTrainingJsonl, heldOutQuestions } from '../fixtures/product-faq.js'
import { createHarness, type Harness, type WorkerChild, waitFor } from '../helpers/worker-process-harness.js'

const TOKEN = 'fine-tuning-chat-internal-token-0123456789'
let h: Harness
let edge: RunningEdge
let worker: WorkerChild
let acme: OpenAI

beforeAll(async () => {
  h = createHarness()
  edge = await startEdge({
    config: parseConfig({
      PGPT_RATE_LIMIT_RPM: '1000000',
      PGPT_DATA_DIR: h.dir,
      PGPT_LOG_LEVEL: 'silent',
      HOST: '127.0.0.1',
      PGPT_INTERNAL_TOKEN: TOKEN,
    }),
    port: 0,
    deps: { keys: new MemoryKeyStore(), usage: new MemoryUsageStore() },
  })
  await publishModelFolder(edge.deps.store, MINI_DIR, {
    id: 'prometheus-mini',
    owner: null,
    contextLength: 256,
    source: 'bundled',
  })
  const { secret } = await createKey(edge.deps.keys, {
    tenant: 'acme',
    name: 'e2e',
    scopes: ['generate', 'fine-tune'],
  })
  acme = new OpenAI({ apiKey: secret, baseURL: `${edge.url}/v1`, maxRetries: 0 })
  worker = await h.startEdgeWorker('generation,fine_tune', edge.url, TOKEN, {
    PGPT_VISIBILITY_TIMEOUT_S: '30',
    PGPT_LOG_LEVEL: 'info',
    PGPT_WORKER_METRICS_PORT: '0',
  })
}, 120_000)

afterAll(async () => {
  worker?.kill('SIGTERM')
  await worker?.exited
  await edge?.close()
  await h?.cleanup()
})

/** Greedy chat answers to each held-out question, with the training's system message. */
async function ask(model: string, k: 0 | 1) {
  const out: { topic: string; question: string; answer: string; finish: string; correct: boolean }[] = []
  for (const q of heldOutQuestions(k)) {
    const r = await acme.chat.completions.create(
      {
        model,
        messages: [
          { role: 'system', content: FAQ_SYSTEM },
          { role: 'user', content: q.question },
        ],
        temperature: 0,
        max_tokens: 24,
      },
      { headers: { 'cache-control': 'no-cache' } },
    )
    const answer = r.choices[0].message.content ?? ''
    out.push({ ...q, answer, finish: r.choices[0].finish_reason, correct: q.check.test(answer) })
  }
  return out
}

describe('a chat fine-tune with the default hyperparameters (openai client, edge, worker process)', () => {
  it('answers phrasings of its FAQ it never saw, ending its turn; the base does not know them', async () => {
    const file = await acme.files.create({
      file: await toFile(Buffer.from(faqTrainingJsonl(1)), 'orbisk-faq.jsonl'),
      purpose: 'fine-tune',
    })
    // As a user starts one: no hyperparameters.
    const created = await acme.fineTuning.jobs.create({
      model: 'prometheus-mini',
      training_file: file.id,
      suffix: 'orbisk',
      seed: 1,
    })
    expect(created.hyperparameters.n_epochs).toBe('auto')
    const done = await waitFor(
      async () => {
        const j = await acme.fineTuning.jobs.retrieve(created.id)
        return ['succeeded', 'failed', 'cancelled'].includes(j.status) ? j : null
      },
      300_000,
      'the fine-tuning job',
    )
    expect(done.error).toBeNull()
    expect(done.status).toBe('succeeded')
    // 'auto' resolved by the worker for 200 examples (core/records/fine-tunes.ts autoEpochs).
    expect(done.hyperparameters.n_epochs).toBe(10)
    const events: OpenAI.FineTuning.FineTuningJobEvent[] = []
    for await (const e of acme.fineTuning.jobs.listEvents(created.id, { limit: 100 })) events.push(e)
    const losses = events
      .reverse()
      .map((e) => (e.data as { train_loss?: number } | null)?.train_loss)
      .filter((x): x is number => x !== undefined)
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(losses.slice(-10))).toBeLessThan(0.5)
    expect(mean(losses.slice(0, 5))).toBeGreaterThan(4)

    const model = done.fine_tuned_model!
    for (const k of [0, 1] as const) {
      const answers = await ask(model, k)
      const report = JSON.stringify(answers, null, 1)
      // Every answer has text and ends at the end-of-turn marker (not at max_tokens, not empty).
      for (const a of answers) {
        expect(a.answer.trim().length, report).toBeGreaterThan(0)
        expect(a.finish, report).toBe('stop')
      }
      expect(answers.filter((a) => a.correct).length, report).toBeGreaterThanOrEqual(6)
    }
    const base = await ask('prometheus-mini', 0)
    expect(base.filter((a) => a.correct).length, JSON.stringify(base)).toBe(0)
  }, 420_000)
})
