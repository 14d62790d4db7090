import { describe, expect, it } from 'vitest'
import { buildByoGraph, serializeByo, shapeConfig } from '../../test/helpers/byo-fixtures.js'
import { describeOnnx } from '../graph/onnx.js'
import { OnnxReadError, readOnnxInterface } from './onnx-interface.js'

const shape = {
  heads: 4,
  kvHeads: 2,
  tied: true,
  positionIds: true,
  dtype: 'fp32',
  externalData: false,
  configStyle: 'llama',
} as const

describe('readOnnxInterface', () => {
  it('reads the same inputs and outputs as a full protobuf decode', () => {
    const { graph } = serializeByo(buildByoGraph(shapeConfig(shape), shape), null)
    const ours = readOnnxInterface(graph)
    const full = describeOnnx(graph)
    expect(ours.inputs).toEqual(full.inputs.map((v) => ({ name: v.name, type: v.dtype, shape: v.shape })))
    expect(ours.outputs).toEqual(full.outputs.map((v) => ({ name: v.name, type: v.dtype, shape: v.shape })))
    expect(ours.inputs.map((i) => i.name)).toContain('position_ids')
    expect(ours.inputs.find((i) => i.name === 'past_key_values.1.value')?.shape).toEqual([
      'batch_size',
      2,
      'past_sequence_length',
      16,
    ])
    expect(ours.externalData).toEqual([])
  })

  it('lists the external data file and reads fp16 types', () => {
    const s = { ...shape, dtype: 'fp16', externalData: true, positionIds: false } as const
    const { graph, data } = serializeByo(buildByoGraph(shapeConfig(s), s), 'model.onnx_data')
    const io = readOnnxInterface(graph)
    expect(io.externalData).toEqual(['model.onnx_data'])
    expect(data!.byteLength).toBeGreaterThan(graph.byteLength * 10) // the weights really moved out
    expect(io.inputs.map((i) => i.name)).not.toContain('position_ids')
    expect(io.outputs.find((o) => o.name === 'present.0.key')?.type).toBe('float16')
  })

  it('throws OnnxReadError on bytes that are not a model', () => {
    expect(() => readOnnxInterface(new TextEncoder().encode('{"not": "onnx"}'))).toThrow(OnnxReadError)
    expect(() => readOnnxInterface(new Uint8Array(0))).toThrow(/no graph/)
  })
})
