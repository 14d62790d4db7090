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

/** A SQLite file in a fresh folder, written by `sql` as an earlier version would have. */
async function fileWritten(sql: string) {
  const dir = await mkdtemp(join(tmpdir(), 'pgpt-usage-'))
  const file = join(dir, 'pgpt.db')
  const old = new Database(file)
  old.exec(sql)
  old.close()
  return { dir, file }
}

describe('SqliteUsageStore on a file written before series', () => {
  it('moves every record into the new layout once; queries and retries see them', async () => {
    const { dir, file } = await fileWritten(`
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

describe('SqliteUsageStore on a file where every record had an id as its primary key', () => {
  it('moves the records into the layout where ids are optional; retries still count once', async () => {
    const { dir, file } = await fileWritten(`
      CREATE TABLE pgpt_usage_series (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, api_key_id TEXT NOT NULL,
        model TEXT NOT NULL, kind TEXT NOT NULL, cached INTEGER NOT NULL,
        UNIQUE (tenant, api_key_id, model, kind, cached));
      CREATE TABLE pgpt_usage_records (id TEXT PRIMARY KEY, series INTEGER NOT NULL REFERENCES pgpt_usage_series (id),
        prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, trained_tokens INTEGER NOT NULL,
        request_id TEXT, at INTEGER NOT NULL);
      CREATE INDEX pgpt_usage_records_series_at ON pgpt_usage_records (series, at);
      INSERT INTO pgpt_usage_series VALUES (1, 't1', 'k1', 'm', 'completion', 0), (2, 't2', 'k2', 'm2', 'batch', 0);
      INSERT INTO pgpt_usage_records VALUES ('a', 1, 1, 2, 0, 'req_a', 1000), ('b', 1, 3, 4, 0, NULL, 1500),
                                            ('c', 2, 5, 6, 0, 'req_c', 2000);
    `)
    const rec = (over: { id?: string; tenant: string; at: number }) => ({
      apiKeyId: 'k1',
      model: 'm',
      kind: 'completion',
      promptTokens: 10,
      completionTokens: 10,
      trainedTokens: 0,
      cached: false,
      ...over,
    })
    const store = new SqliteUsageStore({ file })
    try {
      expect(await store.query({ tenant: 't1', from: 0, to: 10_000, bucketSeconds: 10 })).toEqual([
        { start: 0, end: 10_000, requests: 2, promptTokens: 4, completionTokens: 6, trainedTokens: 0 },
      ])
      await store.record(rec({ id: 'a', tenant: 't1', at: 1000 })) // a retry of a moved record
      await store.record(rec({ tenant: 't1', at: 1200 }))
      await store.record(rec({ tenant: 't1', at: 1300 }))
      expect((await store.query({ tenant: 't1', from: 0, to: 10_000, bucketSeconds: 10 }))[0]).toMatchObject({
        requests: 4,
        promptTokens: 24,
      })
      expect((await store.query({ tenant: 't2', from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(
        1,
      )
    } finally {
      await store.close()
    }
    const db = new Database(file, { readonly: true })
    const names = db.prepare(`SELECT name FROM sqlite_master`).pluck().all()
    const requestIds = db.prepare(`SELECT request_id FROM pgpt_usage_records ORDER BY at`).pluck().all()
    db.close()
    expect(names).not.toContain('sqlite_autoindex_pgpt_usage_records_1')
    expect(names).not.toContain('pgpt_usage_records_keyed')
    expect(names).toEqual(expect.arrayContaining(['pgpt_usage_records_series_at', 'pgpt_usage_records_id']))
    expect(requestIds).toEqual(['req_a', null, null, null, 'req_c']) // by at: a, two new, b, c
    const again = new SqliteUsageStore({ file }) // nothing left to move
    expect((await again.query({ from: 0, to: 10_000, bucketSeconds: 10 }))[0]!.requests).toBe(5)
    await again.close()
    await rm(dir, { recursive: true, force: true })
  })
})
