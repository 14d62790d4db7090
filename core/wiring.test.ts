import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FsObjectStore } from './adapters/fs-store.js'
import { MemoryJobStore } from './adapters/memory-job-store.js'
import { MemoryObjectStore } from './adapters/memory-object-store.js'
import { ObjectJobStore } from './adapters/object-job-store.js'
import { S3ObjectStore } from './adapters/s3-store.js'
import { SqliteJobStore } from './adapters/sqlite-job-store.js'
import { type Config, ConfigError, parseConfig } from './config.js'
import { JOBS_QUEUE, memoryBackends, openQueue, openWiring } from './wiring.js'
import { nodeBackends } from './wiring-node.js'

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})
const local = (vars: Record<string, string> = {}) => {
  const dir = mkdtempSync(join(tmpdir(), 'pgpt-wiring-'))
  dirs.push(dir)
  return parseConfig({ PGPT_DATA_DIR: dir, ...vars })
}
const SQS = {
  PGPT_PROFILE: 'aws',
  PGPT_QUEUE: 'sqs',
  PGPT_SQS_QUEUE_URL: 'http://127.0.0.1:9/000/jobs',
  PGPT_SQS_DLQ_URL: 'http://127.0.0.1:9/000/jobs-dlq',
}

describe('openWiring', () => {
  it('the local profile: folder store, SQLite records, local queues by name', async () => {
    const w = openWiring(local(), nodeBackends(local()))
    expect(w.store).toBeInstanceOf(FsObjectStore)
    expect(w.records().jobs).toBeInstanceOf(SqliteJobStore)
    expect(w.records()).toBe(w.records())
    expect(w.queue()).toBe(w.queue(JOBS_QUEUE))
    expect(w.queue('batch-chunks')).not.toBe(w.queue())
    await w.close()
  })

  it('two processes given one local config share the queue and the records', async () => {
    const config = local()
    const a = openWiring(config, nodeBackends(config))
    const b = openWiring(config, nodeBackends(config))
    const job = await a.records().jobs.create({ tenant: 't', kind: 'generation', input: {} })
    await a.queue().queue.send(JSON.stringify({ jobId: job.id, kind: job.kind }))
    expect((await b.records().jobs.get('t', job.id))?.id).toBe(job.id)
    const [msg] = await b.queue().queue.receive({ maxMessages: 1, waitTimeSeconds: 0 })
    expect(JSON.parse(msg!.body).jobId).toBe(job.id)
    await Promise.all([a.close(), b.close()])
  })

  it('PGPT_RECORDS=object puts the records in the configured store, whatever the runtime', () => {
    const w = openWiring(local({ PGPT_RECORDS: 'object' }), memoryBackends(local()))
    expect(w.store).toBeInstanceOf(MemoryObjectStore)
    expect(w.records().jobs).toBeInstanceOf(ObjectJobStore)
    const mem = openWiring(local(), memoryBackends(local()))
    expect(mem.records().jobs).toBeInstanceOf(MemoryJobStore)
  })

  it('PGPT_STORE=s3 is S3 for every runtime', () => {
    const config = local({ PGPT_STORE: 's3', PGPT_S3_BUCKET: 'models' })
    expect(openWiring(config, nodeBackends(config)).store).toBeInstanceOf(S3ObjectStore)
    expect(openWiring(config, memoryBackends(config)).store).toBeInstanceOf(S3ObjectStore)
  })
})

describe('openQueue with SQS', () => {
  it('one rule for producers and consumers: the dead-letter URL is required', () => {
    expect(() => parseConfig({ ...SQS, PGPT_SQS_DLQ_URL: undefined })).toThrow(/PGPT_SQS_DLQ_URL/)
    // A config built by hand is checked again where the queue is opened.
    const config = { ...parseConfig(SQS), PGPT_SQS_DLQ_URL: undefined } as Config
    expect(() => openQueue(config, memoryBackends(config))).toThrow(ConfigError)
  })

  it('only the jobs queue exists (batch chunks share it)', () => {
    const config = parseConfig(SQS)
    expect(openQueue(config, memoryBackends(config)).maxReceiveCount).toBe(config.PGPT_MAX_RECEIVE_COUNT)
    expect(() => openQueue(config, memoryBackends(config), 'batch-chunks')).toThrow(
      /only the 'generation' queue/,
    )
  })
})
