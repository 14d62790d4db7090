import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readTar, stripCommonFolder, TarError, TarTooLargeError } from './tar.js'

let root: string
const long = `onnx/${'a'.repeat(60)}/${'b'.repeat(60)}/model.onnx_data`
const files: Record<string, string> = {
  'config.json': '{"n_layer": 2}',
  'onnx/model.onnx': 'graph bytes',
  [long]: 'x'.repeat(1500),
  'tokenizer.json': '{"model":{"vocab":{"é":0}}}',
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pgpt-byo-tar-'))
  for (const [p, text] of Object.entries(files)) {
    await mkdir(join(root, 'm', p, '..'), { recursive: true })
    await writeFile(join(root, 'm', p), text)
  }
})
afterAll(() => rm(root, { recursive: true, force: true }))

const asText = (m: Map<string, Uint8Array>) =>
  Object.fromEntries([...m].map(([k, v]) => [k, new TextDecoder().decode(v)]))

/** One ustar header block for a regular file (for archives GNU tar would refuse to write). */
function header(name: string, size: number): Uint8Array {
  const h = new Uint8Array(512)
  const put = (s: string, at: number) => h.set(new TextEncoder().encode(s), at)
  put(name, 0)
  put('0000644\0', 100)
  put(`${size.toString(8).padStart(11, '0')}\0`, 124)
  put('        ', 148)
  h[156] = 48
  put('ustar\0', 257)
  put('00', 263)
  const sum = h.reduce((a, b) => a + b, 0)
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148)
  return h
}

describe('readTar', () => {
  it.each([
    ['gnu', ['--format=gnu', '-cf']],
    ['pax', ['--format=pax', '-cf']],
    ['gzip', ['-czf']],
  ])('unpacks what GNU tar writes (%s), long names included', async (kind, flags) => {
    const out = join(root, `m-${kind}.tar`)
    execFileSync('tar', [...flags, out, '-C', join(root, 'm'), '.'])
    const got = await readTar(new Uint8Array(await readFile(out)))
    expect(asText(got)).toEqual(files)
  })

  it('strips one top folder shared by all paths', async () => {
    const out = join(root, 'top.tar')
    execFileSync('tar', ['-cf', out, '-C', root, 'm'])
    const got = stripCommonFolder(await readTar(new Uint8Array(await readFile(out))))
    expect(Object.keys(asText(got)).sort()).toEqual(Object.keys(files).sort())
  })

  it('refuses a path that leaves the folder, and bytes that are not tar', async () => {
    const evil = new Uint8Array(2048)
    evil.set(header('../../etc/passwd', 3), 0)
    evil.set(new TextEncoder().encode('bad'), 512)
    await expect(readTar(evil)).rejects.toThrow(
      "the archive holds a path outside the folder: '../../etc/passwd'",
    )
    const junk = new Uint8Array(1024).fill(65)
    await expect(readTar(junk)).rejects.toThrow(TarError)
  })

  it('unpacks gzip up to maxBytes, refuses more with TarTooLargeError, and bad gzip with TarError', async () => {
    const tar = new Uint8Array(4096)
    tar.set(header('a.txt', 3), 0)
    tar.set(new TextEncoder().encode('abc'), 512)
    const gz = gzipSync(tar)
    expect(asText(await readTar(gz, { maxBytes: 4096 }))).toEqual({ 'a.txt': 'abc' })
    await expect(readTar(gz, { maxBytes: 4095 })).rejects.toThrow(TarTooLargeError)
    await expect(readTar(gz.subarray(0, gz.length - 12))).rejects.toThrow(/gzip data is not valid/)
  })
})
