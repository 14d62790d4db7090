import { Writable } from 'node:stream'
import type * as ort from 'onnxruntime-node'
import { beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../../core/logger.js'
import { buildTestModel, type TestModel } from '../../test/helpers/tiny-models.js'
import { createSessionWithFallback, Decoder, halfToFloat } from './decoder.js'

let model: TestModel
beforeAll(async () => {
  model = await buildTestModel({ kind: 'random', seed: 3 })
})

function captureLogs() {
  const lines: Array<Record<string, unknown>> = []
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      cb()
    },
  })
  return { lines, logger: createLogger({ service: 'test', level: 'debug', destination }) }
}

describe('execution providers', () => {
  it('falls back from TensorRT and CUDA to CPU on a CPU-only onnxruntime, and logs it', async () => {
    const { lines, logger } = captureLogs()
    const decoder = await Decoder.open(model.folder, {
      executionProviders: ['tensorrt', 'cuda', 'cpu'],
      logger,
    })
    expect(decoder.provider).toBe('cpu')
    const warned = lines.filter((l) => l.msg && String(l.msg).includes('falling back')).map((l) => l.provider)
    expect(warned).toEqual(['tensorrt', 'cuda'])
    expect(lines.some((l) => l.provider === 'cpu' && String(l.msg).includes('cpu execution provider'))).toBe(
      true,
    )
    // and it runs
    const out = await decoder.forward({
      batch: 1,
      seq: 2,
      inputIds: BigInt64Array.of(5n, 6n),
      attentionMask: BigInt64Array.of(1n, 1n),
      positionIds: BigInt64Array.of(0n, 1n),
      past: decoder.emptyCache(1),
    })
    expect(out.logits).toHaveLength(model.config.vocabSize)
    expect(out.present.length).toBe(2)
    await decoder.release()
  })

  it('never fails for a missing GPU provider, even when CPU is not listed', async () => {
    const { session, provider, failed } = await createSessionWithFallback(`${model.folder}/onnx/model.onnx`, {
      executionProviders: ['cuda'],
    })
    expect([provider, failed]).toEqual(['cpu', ['cuda']])
    await session.release()
  })

  it('takes the first provider that opens, in the configured order, with CPU as per-node fallback', async () => {
    const tried: unknown[] = []
    const fake = {} as ort.InferenceSession
    const { provider, failed } = await createSessionWithFallback('x.onnx', {
      executionProviders: ['tensorrt', 'cuda', 'cpu'],
      createSession: async (_path, options) => {
        tried.push(options.executionProviders)
        if ((options.executionProviders as string[])[0] === 'tensorrt') throw new Error('no TensorRT')
        return fake
      },
    })
    expect(provider).toBe('cuda')
    expect(failed).toEqual(['tensorrt'])
    expect(tried).toEqual([
      ['tensorrt', 'cpu'],
      ['cuda', 'cpu'],
    ])
  })
})

describe('KV cache rebuild', () => {
  it('right-aligns rows of different lengths (left padding with zeros) and trims', async () => {
    const decoder = await Decoder.open(model.folder)
    const { numLayers, numKvHeads: H, headDim: D } = decoder.info
    const cache = (batch: number, length: number, base: number) => ({
      batch,
      length,
      keys: Array.from({ length: numLayers }, () =>
        Float32Array.from({ length: batch * H * length * D }, (_, i) => base + i),
      ),
      values: Array.from({ length: numLayers }, () => new Float32Array(batch * H * length * D).fill(base)),
    })
    const a = cache(1, 3, 1000)
    const b = cache(2, 5, 0)
    const out = decoder.rebuild(
      [
        { src: a, row: 0, len: 3 },
        { src: b, row: 1, len: 4 },
      ],
      4,
    )
    expect([out.batch, out.length]).toEqual([2, 4])
    const at = (row: number, h: number, pos: number, d: number) =>
      out.keys[0][((row * H + h) * 4 + pos) * D + d]
    // row 0: one position of padding, then a's three positions
    expect(at(0, 0, 0, 0)).toBe(0)
    expect(at(0, 0, 1, 0)).toBe(1000)
    expect(at(0, 1, 3, D - 1)).toBe(1000 + (1 * 3 + 2) * D + D - 1)
    // row 1: b's row 1, its last four positions
    expect(at(1, 0, 0, 0)).toBe(((1 * H + 0) * 5 + 1) * D)
    expect(out.values[numLayers - 1][0]).toBe(0)
    expect(out.values[numLayers - 1][D]).toBe(1000)
    await decoder.release()
  })

  it('converts float16 bits', () => {
    expect([halfToFloat(0x3c00), halfToFloat(0xc000), halfToFloat(0x0001), halfToFloat(0x7c00)]).toEqual([
      1,
      -2,
      2 ** -24,
      Number.POSITIVE_INFINITY,
    ])
  })
})
