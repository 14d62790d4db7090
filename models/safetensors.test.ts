import { describe, expect, it } from 'vitest'
import { fromBf16, fromHalf, fromHalfBits, toBf16, toHalf, toHalfBits } from './half.js'
import { readSafetensors, type Weights, writeSafetensors } from './safetensors.js'

const weights = (): Weights =>
  new Map([
    ['b.bias', { shape: [3], data: Float32Array.from([1, -2, 0.5]) }],
    ['a.weight', { shape: [2, 2], data: Float32Array.from([0.25, -0.125, 3, 1024]) }],
    ['scalar', { shape: [], data: Float32Array.from([7]) }],
  ])

/** Header JSON and body of a file, parsed by hand from the spec. */
function parse(bytes: Uint8Array) {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))
  return {
    n,
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    body: bytes.subarray(8 + n),
  }
}

describe('safetensors', () => {
  it.each(['F32', 'F16', 'BF16'] as const)(
    'round-trips %s tensors (exact for representable values)',
    (dtype) => {
      const file = readSafetensors(writeSafetensors(weights(), { dtype, metadata: { format: 'pt' } }))
      expect(file.metadata).toEqual({ format: 'pt' })
      expect([...file.tensors.keys()].sort()).toEqual(['a.weight', 'b.bias', 'scalar'])
      for (const [name, t] of weights()) {
        expect(file.tensors.get(name)!.shape).toEqual(t.shape)
        expect([...file.tensors.get(name)!.data]).toEqual([...t.data])
      }
    },
  )

  it('writes the documented layout: u64 header size, sorted contiguous offsets, 8-byte aligned data', () => {
    const bytes = writeSafetensors(weights())
    const { n, header, body } = parse(bytes)
    expect((8 + n) % 8).toBe(0)
    expect(header['a.weight']).toEqual({ dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] })
    expect(header['b.bias']).toEqual({ dtype: 'F32', shape: [3], data_offsets: [16, 28] })
    expect(header.scalar).toEqual({ dtype: 'F32', shape: [], data_offsets: [28, 32] })
    expect(body.byteLength).toBe(32)
    expect(new Float32Array(body.slice(16, 28).buffer)).toEqual(Float32Array.from([1, -2, 0.5]))
  })

  it('reads a file written by another tool: unsorted header, unaligned offsets, inside a Node Buffer', () => {
    // Build by hand: F16 tensor at offset 0 (2 elems = 4 bytes) then an F32 at offset 4.
    const header = JSON.stringify({
      y: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      x: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
    })
    const body = new Uint8Array(8)
    new DataView(body.buffer).setUint16(0, 0x3c00, true) // 1.0
    new DataView(body.buffer).setUint16(2, 0xc000, true) // -2.0
    new DataView(body.buffer).setFloat32(4, 3.5, true)
    const head = new TextEncoder().encode(header)
    const file = Buffer.concat([
      Buffer.from([9, 9, 9]),
      Buffer.alloc(8),
      Buffer.from(head),
      Buffer.from(body),
    ])
    file.writeBigUInt64LE(BigInt(head.byteLength), 3)
    const t = readSafetensors(file.subarray(3)).tensors
    expect([...t.get('x')!.data]).toEqual([1, -2])
    expect([...t.get('y')!.data]).toEqual([3.5])
  })

  it('rejects inconsistent offsets and unsupported dtypes', () => {
    const bad = (entry: object) => {
      const head = new TextEncoder().encode(JSON.stringify({ t: entry }))
      const out = new Uint8Array(8 + head.byteLength + 8)
      new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true)
      out.set(head, 8)
      return out
    }
    expect(() => readSafetensors(bad({ dtype: 'F32', shape: [3], data_offsets: [0, 8] }))).toThrow(/offsets/)
    expect(() => readSafetensors(bad({ dtype: 'I64', shape: [1], data_offsets: [0, 8] }))).toThrow(/I64/)
    expect(() => readSafetensors(new Uint8Array(4))).toThrow(/too short/)
  })
})

describe('half precision', () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00], // rounds up past the largest half: +Inf
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -26, 0x0000], // below half the smallest subnormal: zero
    [1 + 2 ** -11, 0x3c00], // tie rounds to even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // tie rounds to even (up)
    [Number.NEGATIVE_INFINITY, 0xfc00],
  ])('float32 %d → half bits %i', (x, bits) => {
    expect(toHalfBits(x)).toBe(bits)
  })

  it('half → float32 → half is the identity on all finite halves', () => {
    const wrong: number[] = []
    for (let h = 0; h < 0x10000; h++)
      if ((h & 0x7c00) !== 0x7c00 && toHalfBits(fromHalfBits(h)) !== h) wrong.push(h)
    expect(wrong).toEqual([])
    expect(Number.isNaN(fromHalfBits(0x7e00))).toBe(true)
  })

  it('array conversions, and bfloat16 keeps the top 16 bits with rounding', () => {
    const xs = Float32Array.from([0.1, -3.75, 1e-3, 300])
    expect(
      Math.max(...fromHalf(toHalf(xs)).map((v, i) => Math.abs(v - xs[i]) / Math.abs(xs[i]))),
    ).toBeLessThan(1e-3)
    expect([...fromBf16(toBf16(Float32Array.from([1, -2, 3.5])))]).toEqual([1, -2, 3.5])
    expect(Math.abs(fromBf16(toBf16(Float32Array.from([0.1])))[0] - 0.1)).toBeLessThan(1e-3)
  })
})
