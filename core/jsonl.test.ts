import { describe, expect, it } from 'vitest'
import {
  describeProblems,
  JsonlError,
  parseBatchJsonl,
  parseFineTuneJsonl,
  splitJsonl,
  validateJsonl,
} from './jsonl.js'

const req = (id: string, url = '/v1/chat/completions') =>
  JSON.stringify({ custom_id: id, method: 'POST', url, body: { model: 'm', messages: [] } })

function problemsOf(fn: () => unknown) {
  try {
    fn()
  } catch (err) {
    if (err instanceof JsonlError) return err.problems
    throw err
  }
  throw new Error('expected a JsonlError')
}

describe('splitJsonl', () => {
  it('keeps file line numbers, skips blank lines and strips \\r', () => {
    expect(splitJsonl('a\r\n\n  \nb\n')).toEqual([
      { line: 1, text: 'a' },
      { line: 4, text: 'b' },
    ])
  })
})

describe('fine-tune files', () => {
  it('parses chat and completion examples', () => {
    expect(
      parseFineTuneJsonl(
        '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n' +
          '{"messages":[{"role":"system","content":"s"},{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}',
      ),
    ).toEqual([
      {
        kind: 'chat',
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'yo' },
        ],
      },
      {
        kind: 'chat',
        messages: [
          { role: 'system', content: 's' },
          { role: 'assistant', content: 'ab' },
        ],
      },
    ])
    expect(parseFineTuneJsonl('{"prompt":"p","completion":"c"}')).toEqual([
      { kind: 'completion', prompt: 'p', completion: 'c' },
    ])
  })

  it.each([
    ['bad JSON', '{"prompt":"p","completion":"c"}\n{nope', 2, /invalid JSON/],
    ['an array', '[1,2]', 1, /JSON object/],
    ['no assistant message', '{"messages":[{"role":"user","content":"x"}]}', 1, /assistant/],
    ['a bad role', '{"messages":[{"role":"robot","content":"x"}]}', 1, /messages\[0\]\.role/],
    ['an empty completion', '{"prompt":"p","completion":""}', 1, /completion/],
    ['neither format', '{"text":"x"}', 1, /expected/],
    [
      'mixed formats',
      '{"prompt":"p","completion":"c"}\n{"messages":[{"role":"assistant","content":"x"}]}',
      2,
      /chat example in a file of completion/,
    ],
  ])('names the line of %s', (_what, text, line, message) => {
    const p = problemsOf(() => parseFineTuneJsonl(text))
    expect(p[0].line).toBe(line)
    expect(p[0].message).toMatch(message)
  })
})

describe('batch files', () => {
  it('parses requests with their line numbers', () => {
    const out = parseBatchJsonl(`${req('a')}\n\n${req('b', '/v1/completions')}\n`)
    expect(out.map((r) => [r.custom_id, r.url, r.line])).toEqual([
      ['a', '/v1/chat/completions', 1],
      ['b', '/v1/completions', 3],
    ])
  })

  it.each([
    ['a repeated custom_id', `${req('a')}\n${req('a')}`, 2, /repeats line 1/],
    ['an unknown url', req('a', '/v1/embeddings'), 1, /'url'/],
    [
      'method GET',
      JSON.stringify({ custom_id: 'a', method: 'GET', url: '/v1/completions', body: {} }),
      1,
      /method/,
    ],
    ['no body', JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/completions' }), 1, /body/],
    ['an empty custom_id', req(''), 1, /custom_id/],
  ])('names the line of %s', (_what, text, line, message) => {
    const p = problemsOf(() => parseBatchJsonl(text))
    expect(p[0].line).toBe(line)
    expect(p[0].message).toMatch(message)
  })

  it('collects every bad line (up to the cap) and describes them', () => {
    const text = Array.from({ length: 30 }, (_, i) => (i % 2 ? '{bad' : req(`r${i}`))).join('\n')
    const { problems, lines } = validateJsonl('batch', text)
    expect(lines).toBe(0)
    expect(problems.map((p) => p.line).slice(0, 3)).toEqual([2, 4, 6])
    expect(problems).toHaveLength(15)
    expect(describeProblems(problems)).toMatch(/^line 2: invalid JSON.*; and 10 more$/)
    expect(validateJsonl('batch', req('x'))).toEqual({ problems: [], lines: 1 })
  })
})
