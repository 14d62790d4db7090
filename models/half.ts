/**
 * float32 <-> float16 / bfloat16 bit conversions. Node 20 has no Float16Array,
 * so these are hand-written (round to nearest even, as numpy and torch do).
 */

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** One float32 to IEEE half bits, round to nearest even; overflow becomes ±Infinity. */
export function toHalfBits(x: number): number {
  f32[0] = x
  const b = u32[0]
  const sign = (b >>> 16) & 0x8000
  const exp = (b >>> 23) & 0xff
  let mant = b & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0) // Inf / NaN
  let e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign // underflow to zero
    mant |= 0x800000 // implicit leading 1
    const shift = 14 - e
    const half = 1 << (shift - 1)
    const rest = mant & ((1 << shift) - 1)
    let m = mant >>> shift
    if (rest > half || (rest === half && m & 1)) m++
    return sign | m
  }
  const rest = mant & 0x1fff
  let m = mant >>> 13
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++
    if (m === 0x400) {
      m = 0
      e++
      if (e >= 0x1f) return sign | 0x7c00
    }
  }
  return sign | (e << 10) | m
}

export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

export function toHalf(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = toHalfBits(src[i])
  return out
}

export function fromHalf(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = fromHalfBits(src[i])
  return out
}

/** float32 to bfloat16 bits (upper 16 bits, round to nearest even). */
export function toBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length)
  const out = new Uint16Array(src.length)
  for (let i = 0; i < src.length; i++) {
    const b = bits[i]
    if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff)
      out[i] = (b >>> 16) | 0x40 // keep NaN a NaN
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16
  }
  return out
}

export function fromBf16(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16
  return new Float32Array(out.buffer)
}
