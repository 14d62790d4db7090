import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, expect, it } from 'vitest'
import { testUsageStore } from '../../test/contracts/usage-store.js'
import { SqliteUsageStore } from './sqlite-usage-store.js'

testUsageStore({
  name: 'SQLite',
  make: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-usage-'))
    const file = join(dir, 'pgpt.db')
    return {
      store: new SqliteUsageStore({ file }),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  },
})

describe('SqliteUsageStore group commit', () => {
  it('commits the records of a few turns together; a query before the commit already counts them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-usage-'))
    const store = new SqliteUsageStore({ file: join(dir, 'pgpt.db') })
    try {
      const rec = (i: number) => ({
        id: `u_${i}`,
        tenant: 't1',
        apiKeyId: 'k1',
        model: 'm',
        kind: 'chat.completion',
        promptTokens: 2,
        completionTokens: 3,
        trainedTokens: 0,
        cached: false,
        at: 1000 + i,
      })
      const written = Array.from({ length: 40 }, (_, i) => store.record(rec(i))) // more than one INSERT's rows
      const buckets = await store.query({ tenant: 't1', from: 0, to: 10_000, bucketSeconds: 10 })
      expect(buckets).toEqual([
        { start: 0, end: 10_000, requests: 40, promptTokens: 80, completionTokens: 120, trainedTokens: 0 },
      ])
      await Promise.all(written)
      // Records a turn apart share one commit (one promise), which an idle loop reaches at once.
      const first = store.record(rec(100))
      await new Promise(setImmediate)
      const second = store.record(rec(101))
      expect(second).toBe(first)
      await second
      expect((await store.query({ from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(42)
      await store.record(rec(3)) // a retry: counted once
      expect((await store.query({ from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(42)
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('SqliteUsageStore on a file written before series', () => {
  it('moves every record into the new layout once; queries and retries see them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgpt-usage-'))
    const file = join(dir, 'pgpt.db')
    const old = new Database(file)
    old.exec(`
      CREATE TABLE pgpt_usage (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, api_key_id TEXT NOT NULL,
        model TEXT NOT NULL, kind TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, trained_tokens INTEGER NOT NULL, request_id TEXT,
        cached INTEGER NOT NULL, at INTEGER NOT NULL);
      CREATE INDEX pgpt_usage_tenant_at ON pgpt_usage (tenant, at);
      CREATE INDEX pgpt_usage_at ON pgpt_usage (at);
      INSERT INTO pgpt_usage VALUES ('a', 't1', 'k1', 'm', 'completion', 1, 2, 0, 'req_a', 0, 1000),
                                    ('b', 't1', 'k1', 'm', 'completion', 3, 4, 0, NULL, 0, 1500),
                                    ('c', 't2', 'k2', 'm2', 'fine_tune', 0, 0, 9, NULL, 0, 2000);
    `)
    old.close()
    const rec = (id: string, tenant: string, at: number) => ({
      id,
      tenant,
      apiKeyId: 'k1',
      model: 'm',
      kind: 'completion',
      promptTokens: 5,
      completionTokens: 6,
      trainedTokens: 0,
      cached: false,
      at,
    })
    const store = new SqliteUsageStore({ file })
    try {
      expect(await store.query({ from: 0, to: 10_000, bucketSeconds: 10, groupBy: 'model' })).toEqual([
        {
          start: 0,
          end: 10_000,
          group: 'm',
          requests: 2,
          promptTokens: 4,
          completionTokens: 6,
          trainedTokens: 0,
        },
        {
          start: 0,
          end: 10_000,
          group: 'm2',
          requests: 1,
          promptTokens: 0,
          completionTokens: 0,
          trainedTokens: 9,
        },
      ])
      await store.record(rec('a', 't1', 1000)) // recorded before the migration: still counted once
      await store.record(rec('d', 't3', 3000))
      expect(await store.query({ tenant: 't1', from: 0, to: 10_000, bucketSeconds: 10 })).toEqual([
        { start: 0, end: 10_000, requests: 2, promptTokens: 4, completionTokens: 6, trainedTokens: 0 },
      ])
      expect((await store.query({ from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(4)
    } finally {
      await store.close()
    }
    const db = new Database(file, { readonly: true })
    const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all()
    const requestId = db.prepare(`SELECT request_id FROM pgpt_usage_records WHERE id = 'a'`).pluck().get()
    db.close()
    expect(tables).not.toContain('pgpt_usage')
    expect(requestId).toBe('req_a')
    // Opened again: nothing left to move, nothing counted twice.
    const again = new SqliteUsageStore({ file })
    expect((await again.query({ from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(4)
    await again.close()
    await rm(dir, { recursive: true, force: true })
  })
})
