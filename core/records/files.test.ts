/**
 * The storage caps' ledger (files.ts over ledger.ts): files written without
 * caps (batch outputs) count and are never refused, a rewrite of the same id
 * counts once, a write that fails gives its reservation back, and a tenant's
 * files stored before its ledger existed are counted when it is first made.
 */
import { describe, expect, it } from 'vitest'
import { MemoryObjectStore } from '../adapters/memory-object-store.js'
import type { Body, PutOptions } from '../ports/object-store.js'
import { createFile, deleteFile, fileContentKey, fileUsage, StorageLimitError } from './files.js'

const caps = { maxFiles: 2, maxBytes: 1000 }

describe('per-tenant storage caps', () => {
  it('refuses a capped write beyond the cap; an uncapped one (a batch output) counts and is stored', async () => {
    const store = new MemoryObjectStore()
    await createFile(store, 't', { filename: 'a', purpose: 'batch', content: 'aa' }, undefined, caps)
    await createFile(store, 't', { filename: 'b', purpose: 'batch', content: 'bb' }, undefined, caps)
    const refused = await createFile(
      store,
      't',
      { filename: 'c', purpose: 'batch', content: 'cc' },
      undefined,
      caps,
    ).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(StorageLimitError)
    expect(refused).toMatchObject({ over: 'files', held: { files: 2, bytes: 4 } })
    const out = await createFile(store, 't', {
      id: 'file-abcout',
      filename: 'o',
      purpose: 'batch_output',
      content: 'ooo',
    })
    expect(await store.head(fileContentKey('t', out.id))).not.toBeNull()
    // Written again (a finalizer delivered twice): counted once.
    await createFile(store, 't', {
      id: 'file-abcout',
      filename: 'o',
      purpose: 'batch_output',
      content: 'oooo',
    })
    expect(await fileUsage(store, 't')).toEqual({ files: 3, bytes: 8 })
    expect(await deleteFile(store, 't', out.id)).toBe(true)
    expect(await fileUsage(store, 't')).toEqual({ files: 2, bytes: 4 })
  })

  it('a write that fails gives its reservation back', async () => {
    const store = new MemoryObjectStore()
    const put = store.put.bind(store)
    store.put = (key: string, body: Body, o?: PutOptions) =>
      key.startsWith('files/') ? Promise.reject(new Error('disk full')) : put(key, body, o)
    await expect(
      createFile(store, 't', { filename: 'a', purpose: 'batch', content: 'aa' }, undefined, caps),
    ).rejects.toThrow('disk full')
    expect(await fileUsage(store, 't')).toEqual({ files: 0, bytes: 0 })
  })

  it('counts the files stored before the ledger existed', async () => {
    const store = new MemoryObjectStore()
    await store.put(fileContentKey('t', 'file-old1'), 'x'.repeat(600))
    expect(await fileUsage(store, 't')).toEqual({ files: 1, bytes: 600 })
    const refused = await createFile(
      store,
      't',
      { filename: 'a', purpose: 'batch', content: 'y'.repeat(500) },
      undefined,
      caps,
    ).catch((e: unknown) => e)
    expect(refused).toMatchObject({ over: 'bytes', held: { files: 1, bytes: 600 } })
  })
})
