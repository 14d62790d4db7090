import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCommand } from 'citty'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import modelCli from '../../cli/model.js'
import { FsObjectStore } from '../../core/adapters/fs-store.js'
import { readManifest } from '../../core/model-manifest.js'
import { writeByoFolder } from '../../test/helpers/byo-fixtures.js'

let root: string
let folder: string

/** Runs `pgpt model ...` and returns what it printed. */
async function cli(rawArgs: string[]): Promise<string> {
  const lines: string[] = []
  const spy = vi.spyOn(console, 'log').mockImplementation((...xs) => void lines.push(xs.join(' ')))
  try {
    await runCommand(modelCli, { rawArgs })
  } finally {
    spy.mockRestore()
  }
  return lines.join('\n')
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-byo-cli-'))
  folder = (
    await writeByoFolder(join(root, 'my-model'), {
      heads: 4,
      kvHeads: 2,
      tied: true,
      positionIds: true,
      dtype: 'fp16',
      externalData: false,
      configStyle: 'llama',
    })
  ).dir
  vi.stubEnv('PGPT_DATA_DIR', join(root, 'data'))
  vi.stubEnv('PGPT_STORE', 'fs')
  vi.stubEnv('PGPT_CONFIG_FILE', '')
})
afterAll(async () => {
  vi.unstubAllEnvs()
  await rm(root, { recursive: true, force: true })
})

describe('pgpt model validate / publish / list', () => {
  it('validate prints the shape without storing anything', async () => {
    const out = await cli(['validate', folder])
    expect(out).toContain('servable (onnx/model_fp16.onnx)')
    expect(out).toContain('layers 2, key/value heads 2, head size 16, vocabulary 4096 (tokenizer 4096)')
    expect(out).toContain('float16')
  })

  it('publish --tenant into <PGPT_DATA_DIR>/store, then list per tenant', async () => {
    const out = await cli(['publish', folder, '--tenant', 'acme'])
    expect(out).toMatch(/^published my-model for tenant acme: 5 files/)
    const store = new FsObjectStore({ root: join(root, 'data', 'store') })
    expect((await readManifest(store, 'my-model'))?.owner).toBe('acme')
    await cli(['publish', folder, '--name', 'for-all', '--public'])
    expect((await readManifest(store, 'for-all'))?.owner).toBeNull()

    const acme = await cli(['list', '--tenant', 'acme'])
    expect(acme).toMatch(/^for-all\t\(public\)\tpublished\t256\t/m)
    expect(acme).toMatch(/^my-model\tacme\tpublished\t256\t/m)
    const globex = await cli(['list', '--tenant', 'globex'])
    expect(globex).toContain('for-all')
    expect(globex).not.toContain('my-model')
  })

  it('publish refuses a bad folder, a missing owner choice and a taken name', async () => {
    await expect(cli(['publish', folder, '--name', 'x'])).rejects.toThrow(
      'pass exactly one of --tenant <t> or --public',
    )
    await expect(cli(['publish', folder, '--tenant', 'globex'])).rejects.toThrow(
      "a model 'my-model' already exists and belongs to someone else",
    )
    await expect(cli(['publish', root, '--name', 'empty', '--public'])).rejects.toThrow(
      /missing file 'config\.json'[\s\S]*missing file 'tokenizer\.json'/,
    )
  })
})
