import { describe, expect, it } from 'vitest'
import { IncrementalDetokenizer, StopMatcher } from './text.js'

/** A byte-level toy vocabulary: each id is a byte string, decoded as UTF-8 with U+FFFD for broken bytes. */
function byteVocab(pieces: Uint8Array[]) {
  const decoder = new TextDecoder()
  return (ids: number[]) => decoder.decode(Buffer.concat(ids.map((id) => pieces[id])))
}

describe('IncrementalDetokenizer', () => {
  it('holds back multi-byte characters split across tokens and concatenates to the full decode', () => {
    const text = 'a€b😀ç'
    const bytes = Buffer.from(text, 'utf8')
    // one byte per token: every multi-byte character is split
    const pieces = [...bytes].map((b) => Uint8Array.of(b))
    const decode = byteVocab(pieces)
    const detok = new IncrementalDetokenizer(decode)
    const chunks = pieces.map((_, i) => detok.push(i))
    chunks.push(detok.flush())
    for (const c of chunks) expect(c.includes('\uFFFD')).toBe(false)
    expect(chunks.join('')).toBe(text)
    // '€' is 3 bytes: the first two tokens give nothing, the third the whole character
    expect(chunks.slice(1, 4)).toEqual(['', '', '€'])
  })

  it('uses prompt context without emitting it', () => {
    const pieces = ['Hello', ' wor', 'ld', '!'].map((s) => new Uint8Array(Buffer.from(s)))
    const detok = new IncrementalDetokenizer(byteVocab(pieces), [0])
    expect([detok.push(1), detok.push(2), detok.push(3), detok.flush()].join('')).toBe(' world!')
  })

  it('flushes an incomplete character at the end as U+FFFD', () => {
    const pieces = [Uint8Array.of(0x61), Uint8Array.of(0xe2, 0x82)]
    const detok = new IncrementalDetokenizer(byteVocab(pieces))
    expect(detok.push(0)).toBe('a')
    expect(detok.push(1)).toBe('')
    expect(detok.flush()).toBe('\uFFFD')
  })
})

describe('StopMatcher', () => {
  const run = (stops: string[], chunks: string[]) => {
    const m = new StopMatcher(stops)
    const out: string[] = []
    let stopped = false
    for (const c of chunks) {
      const r = m.push(c)
      out.push(r.text)
      if (r.stopped) {
        stopped = true
        break
      }
    }
    if (!stopped) out.push(m.flush())
    return { out, stopped, text: out.join('') }
  }

  it.each([
    { stops: ['END'], chunks: ['abc E', 'N', 'Dxyz'], text: 'abc ', stopped: true },
    { stops: ['END'], chunks: ['abcEND'], text: 'abc', stopped: true },
    { stops: ['\n\n', 'xy'], chunks: ['a\n', 'b\n', '\nc'], text: 'a\nb', stopped: true },
    { stops: ['END'], chunks: ['abc EN', 'x'], text: 'abc ENx', stopped: false },
    { stops: ['END'], chunks: ['abc E'], text: 'abc E', stopped: false },
    { stops: ['bc', 'abcd'], chunks: ['xa', 'bcd'], text: 'x', stopped: true },
    { stops: ['bc', 'abcd'], chunks: ['xa', 'bce'], text: 'xa', stopped: true },
    { stops: ['ab'], chunks: ['ab'], text: '', stopped: true },
  ])('cuts $stops exactly in $chunks', ({ stops, chunks, text, stopped }) => {
    const r = run(stops, chunks)
    expect(r.text).toBe(text)
    expect(r.stopped).toBe(stopped)
  })

  it('holds back text that could start a stop sequence, then releases it', () => {
    const m = new StopMatcher(['STOP'])
    expect(m.push('hello S')).toEqual({ text: 'hello ', stopped: false })
    expect(m.push('T')).toEqual({ text: '', stopped: false })
    expect(m.push('x')).toEqual({ text: 'STx', stopped: false })
  })

  it('passes everything through without stop sequences', () => {
    const m = new StopMatcher([])
    expect(m.push('abc')).toEqual({ text: 'abc', stopped: false })
  })
})
