/**
 * workers/Dockerfile, checked for what the image must be without building it
 * (no Docker engine in CI): CUDA + cuDNN runtime base, Node LTS, GPU providers
 * of onnxruntime-node installed despite our .npmrc, non-root user, model-cache
 * volume, HEALTHCHECK on the worker's /health, CMD = the documented entry.
 * (test/deploy/worker-image.test.ts runs that CMD against SQS and S3 servers.)
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { execForm, readDockerfile, stageEnv } from './dockerfile.js'

const ROOT = resolve(import.meta.dirname, '../..')
const require = createRequire(resolve(ROOT, 'package.json'))
const { stages } = readDockerfile(resolve(ROOT, 'workers/Dockerfile'))
const runtime = stages.at(-1)!
const ops = (op: string) => runtime.instructions.filter((i) => i.op === op)

describe('workers/Dockerfile', () => {
  it('is multi-stage on a CUDA 12 + cuDNN runtime image with Node LTS', () => {
    expect(stages.length).toBeGreaterThanOrEqual(3)
    const base = stages.find((s) => s.name === 'base')!
    expect(base.from).toMatch(/^nvidia\/cuda:12\.\d+(\.\d+)?-cudnn-runtime-ubuntu(22|24)\.04$/)
    expect(stages.find((s) => s.name === 'node')?.from).toMatch(/^node:(22|24)[-.]/)
    expect(runtime.from).toBe('base')
  })

  it('installs the CUDA and TensorRT providers of onnxruntime-node in the npm ci stage', () => {
    const deps = stages.find((s) => s.name === 'deps')!
    expect(stageEnv(deps).ONNXRUNTIME_NODE_INSTALL).toBe('true')
    const run = deps.instructions.find((i) => i.op === 'RUN' && i.args.includes('npm ci'))!.args
    expect(run).toMatch(/--omit=dev/)
    expect(run).toMatch(/libonnxruntime_providers_cuda\.so/)
    expect(run).toMatch(/libonnxruntime_providers_tensorrt\.so/)
    // The repo's .npmrc skips the download; it is in the build, so the override must win over it.
    expect(readFileSync(resolve(ROOT, '.npmrc'), 'utf8')).toMatch(/onnxruntime-node-install=skip/)
    expect(deps.instructions.some((i) => i.op === 'COPY' && i.args.includes('.npmrc'))).toBe(true)
  })

  it('the install flag really overrides the .npmrc skip, and brings the CUDA and TensorRT providers', () => {
    const probe = (env: Record<string, string>) =>
      execFileSync(
        process.execPath,
        [
          '-e',
          "console.log(JSON.stringify(require('onnxruntime-node/script/install-utils.js').parseInstallFlag()))",
        ],
        { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' },
      ).trim()
    const npmrc = {
      npm_config_onnxruntime_node_install: 'skip',
      npm_config_onnxruntime_node_install_cuda: 'skip',
    }
    expect(probe(npmrc)).toBe('false')
    const flag = stageEnv(stages.find((s) => s.name === 'deps')!).ONNXRUNTIME_NODE_INSTALL
    expect(probe({ ...npmrc, ONNXRUNTIME_NODE_INSTALL: flag })).toBe('true') // force the platform's manifest
    // What would not have been enough: the documented `cuda12` value parses to unset, the old variable loses to .npmrc.
    expect(probe({ ...npmrc, ONNXRUNTIME_NODE_INSTALL_CUDA: 'v12' })).toBe('false')
    const meta = require('onnxruntime-node/script/install-metadata.js') as {
      requirements: Record<string, string[]>
      manifests: Record<string, Record<string, unknown>>
    }
    expect(meta.requirements['linux/x64']).toEqual(['cuda12'])
    expect(Object.keys(meta.manifests['linux/x64:cuda12']).sort()).toEqual([
      './libonnxruntime_providers_cuda.so',
      './libonnxruntime_providers_shared.so',
      './libonnxruntime_providers_tensorrt.so',
    ])
  })

  it('runs as a non-root user', () => {
    const users = ops('USER')
    expect(users).toHaveLength(1)
    expect(users[0].args).not.toMatch(/^(root|0)(:|$)/)
    // USER comes before CMD and after the last RUN that needs root.
    const idx = (i: { op: string }) => runtime.instructions.indexOf(i as never)
    expect(idx(users[0])).toBeGreaterThan(Math.max(...ops('RUN').map(idx)))
  })

  it('has a model-cache volume, configured by environment only', () => {
    const env = stageEnv(runtime)
    const volume = execForm(ops('VOLUME')[0].args)
    expect(env.PGPT_MODEL_CACHE_DIR?.startsWith(`${volume[0]}/`)).toBe(true)
    expect(env.PGPT_WORKER_METRICS_PORT).toMatch(/^\d+$/)
    expect(env.PGPT_WORKER_METRICS_HOST).toBe('0.0.0.0')
    expect(env.PGPT_EXECUTION_PROVIDERS).toBe('tensorrt,cuda,cpu')
    expect(env.PGPT_CONFIG_FILE).toBeUndefined()
    expect(
      runtime.instructions.some((i) => i.op === 'COPY' && /(^|[\s/])\.?[\w-]*\.env\b/.test(i.args)),
    ).toBe(false)
  })

  it('checks /health on PGPT_WORKER_METRICS_PORT', () => {
    const [hc] = ops('HEALTHCHECK')
    expect(hc.args).toMatch(/--interval=\d+s/)
    expect(execForm(hc.args).join(' ')).toMatch(/process\.env\.PGPT_WORKER_METRICS_PORT\+'\/health'/)
  })

  it('CMD is exactly the entry that workers/main.ts documents', () => {
    const documented = /^ \*\s+(node --import tsx workers\/main\.ts)$/m.exec(
      readFileSync(resolve(ROOT, 'workers/main.ts'), 'utf8'),
    )?.[1]
    expect(documented).toBe('node --import tsx workers/main.ts')
    expect(execForm(ops('CMD')[0].args)).toEqual(documented!.split(' '))
    expect(execForm(ops('ENTRYPOINT')[0].args)).toEqual(['/usr/bin/tini', '--'])
  })

  it('.dockerignore keeps the context small but keeps what the image copies', () => {
    const ignored = readFileSync(resolve(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
    expect(ignored).toEqual(expect.arrayContaining(['**/node_modules', '.git', '.pgpt', 'test']))
    const copied = runtime.instructions
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
    expect(copied).toEqual(['package.json', 'tsconfig.json', 'core', 'models', 'workers'])
    for (const c of copied) expect(ignored).not.toContain(c)
  })
})
