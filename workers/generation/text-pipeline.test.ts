/**
 * The per-choice text pipeline with scripted token ids and toy tokenizers:
 * no model, no onnxruntime (the last describe checks the module's import
 * graph). engine.test.ts covers the same behaviour end to end on tiny models.
 */
import { readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'
import type { TokenEventData } from '../../core/protocol.js'
import {
  type PipelineTokenizer,
  TextPipeline,
  type TextPipelineOptions,
  TokenEmitter,
} from './text-pipeline.js'

const EOS = 256

/** A byte-level toy: id b < 256 is the byte b, EOS is special (no bytes); names are `<b>`. */
const byteTokenizer: PipelineTokenizer = {
  plainByteLevel: true,
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids.filter((id) => id !== EOS))),
  decodeBytes: (id) => (id === EOS ? new Uint8Array(0) : Uint8Array.of(id)),
  tokenText: (id) => (id === EOS ? '</s>' : new TextDecoder().decode(Uint8Array.of(id))),
  tokenBytes: (id) => (id === EOS ? [] : [id]),
}

const bytesOf = (text: string) => [...Buffer.from(text, 'utf8')]

function run(
  ids: number[],
  options: Partial<TextPipelineOptions> = {},
  raw?: (token: number, step: number) => Float32Array,
) {
  const events: TokenEventData[] = []
  const text = new TextPipeline({
    index: 0,
    tokenizer: byteTokenizer,
    promptIds: bytesOf('>'),
    eosTokenIds: new Set([EOS]),
    stop: [],
    maxTokens: 1000,
    contextLength: 4096,
    logprobs: null,
    emit: (e) => void events.push(e),
    ...options,
  })
  const done: boolean[] = []
  for (const [step, id] of ids.entries()) {
    done.push(text.push(id, raw ? raw(id, step) : null))
    if (done.at(-1)) break
  }
  return { text, events, done, streamed: events.map((e) => e.text).join('') }
}

describe('TextPipeline: detokenizing', () => {
  it('sends multi-byte characters whole, one event per token that brings text', () => {
    const { text, events, done } = run([...bytesOf('a€😀'), EOS])
    expect(events.map((e) => e.text)).toEqual(['a', '€', '😀'])
    for (const e of events) expect(e).toEqual({ index: 0, text: e.text })
    expect(done).toEqual([...Array(8).fill(false), true])
    expect(text.generated).toBe(9) // EOS counts as a completion token
    expect(text.result()).toEqual({ index: 0, text: 'a€😀', finishReason: 'stop', logprobs: null })
  })

  it('decodes with the prompt as context when the tokenizer is not plain byte-level', () => {
    // SentencePiece's Metaspace: '▁' is a space, and a decode drops its leading one.
    const pieces = ['▁Hello', '▁wor', 'ld', '!', '']
    const metaspace: PipelineTokenizer = {
      plainByteLevel: false,
      decode: (ids) =>
        ids
          .map((id) => pieces[id].replaceAll('▁', ' '))
          .join('')
          .replace(/^ /, ''),
      decodeBytes: () => {
        throw new Error('not byte-level')
      },
      tokenText: (id) => pieces[id],
      tokenBytes: (id) => bytesOf(pieces[id]),
    }
    const { text, streamed } = run([1, 2, 3, 4], {
      tokenizer: metaspace,
      promptIds: [0],
      eosTokenIds: new Set([4]),
    })
    expect(streamed).toBe(' world!')
    expect(text.result().text).toBe(' world!')
  })
})

describe('TextPipeline: stops, EOS and limits', () => {
  const CHAIN = [...bytesOf('ab€c😀 END!xyz'), EOS]

  it.each([
    { stop: ['END'], want: 'ab€c😀 ' },
    { stop: ['€c'], want: 'ab' },
    { stop: ['😀 E', 'xyz'], want: 'ab€c' },
    { stop: ['c😀', 'b'], want: 'a' },
    { stop: ['ENDX'], want: 'ab€c😀 END!xyz' },
    { stop: ['yz!'], want: 'ab€c😀 END!xyz' },
  ])('cuts exactly before $stop, streamed and final alike', ({ stop, want }) => {
    const { text, streamed } = run(CHAIN, { stop })
    expect(streamed).toBe(want)
    expect(text.result()).toMatchObject({ text: want, finishReason: 'stop' })
  })

  it('holds back a possible stop start and releases it when the choice ends otherwise', () => {
    const { events, text } = run([...bytesOf('xEN'), EOS], { stop: ['END'] })
    // 'E' and 'N' wait (they may begin 'END'); EOS releases them
    expect(events.map((e) => e.text)).toEqual(['x', 'EN'])
    expect(text.result()).toMatchObject({ text: 'xEN', finishReason: 'stop' })
    const length = run(bytesOf('xEN'), { stop: ['END'], maxTokens: 3 })
    expect(length.events.map((e) => e.text)).toEqual(['x', 'EN'])
    expect(length.text.result()).toMatchObject({ text: 'xEN', finishReason: 'length' })
  })

  it('ends at the stop token: later tokens are not taken', () => {
    const { done, text } = run([...bytesOf('abXcd'), EOS], { stop: ['X'] })
    expect(done).toEqual([false, false, true])
    expect(text.generated).toBe(3)
    expect(() => text.push(0x63)).toThrow(/after the choice finished/)
  })

  it('stops at max_tokens with finish reason length; a cut character decodes as U+FFFD, as a one-shot decode', () => {
    // a, b and two of the three bytes of €
    const four = run(CHAIN, { maxTokens: 4 })
    expect(four.done).toEqual([false, false, false, true])
    expect(four.text.result()).toMatchObject({ text: 'ab\uFFFD', finishReason: 'length' })
    expect(four.streamed).toBe('ab\uFFFD')
    expect(byteTokenizer.decode(CHAIN.slice(0, 4))).toBe('ab\uFFFD')
    expect(run(CHAIN, { maxTokens: 5 }).text.result().text).toBe('ab€')
  })

  it('stops when the prompt and the completion fill the context', () => {
    const { text, done } = run(CHAIN, { promptIds: bytesOf('>>>'), contextLength: 5 })
    expect(done).toEqual([false, true])
    expect(text.result()).toMatchObject({ text: 'ab', finishReason: 'length' })
  })

  it('takes any of several EOS ids (e.g. an end-of-turn token) and never shows them', () => {
    const { text, events } = run([...bytesOf('hi'), 300, ...bytesOf('more')], {
      eosTokenIds: new Set([EOS, 300]),
    })
    expect(events.map((e) => e.text)).toEqual(['h', 'i'])
    expect(text.result()).toMatchObject({ text: 'hi', finishReason: 'stop' })
    expect(text.generated).toBe(3)
  })

  it('reports length for a choice the batch ended before it finished', () => {
    const { text } = run(bytesOf('ab'))
    expect(text.done).toBe(false)
    expect(text.result('>')).toEqual({ index: 0, text: '>ab', finishReason: 'length', logprobs: null })
  })
})

describe('TextPipeline: logprobs', () => {
  /** Logits over 257 ids favouring the token drawn, then ids 0x41.. in order. */
  const logits = (token: number) => {
    const l = new Float32Array(257).fill(-10)
    l[0x41] = 1
    l[0x42] = 0.5
    l[token] = 3
    return l
  }

  it('gives each token its raw log-probability and the top alternatives, on its event too', () => {
    const { text, events } = run([0xe2, 0x82, 0xac, EOS], { logprobs: 2 }, logits)
    const lps = text.result().logprobs!
    expect(lps).toHaveLength(4)
    const l = logits(0xe2)
    const lse = Math.log(l.reduce((s, v) => s + Math.exp(v), 0))
    expect(lps[0].logprob).toBeCloseTo(3 - lse, 5)
    expect(lps[0]).toMatchObject({ token: '\uFFFD', bytes: [0xe2] })
    expect(lps[0].top.map((t) => t.bytes)).toEqual([[0xe2], [0x41]])
    expect(lps[0].top[0].logprob).toBeGreaterThan(lps[0].top[1].logprob)
    expect(lps[3]).toMatchObject({ token: '</s>', bytes: [] })
    // held-back bytes and EOS still get an event, for their logprob
    expect(events.map((e) => e.text)).toEqual(['', '', '€', ''])
    expect(events.map((e) => e.logprob)).toEqual(lps)
  })

  it('keeps none when not asked, even when given logits', () => {
    const { text, events } = run([0x61, EOS], { logprobs: null }, logits)
    expect(text.wantsLogits).toBe(false)
    expect(text.result().logprobs).toBeNull()
    expect(events).toEqual([{ index: 0, text: 'a' }])
  })

  it('wants the logits with logprobs 0 (the token alone, no alternatives)', () => {
    const { text } = run([0x61, EOS], { logprobs: 0 }, logits)
    expect(text.wantsLogits).toBe(true)
    expect(text.result().logprobs!.map((lp) => lp.top)).toEqual([[], []])
  })
})

describe('TokenEmitter', () => {
  it('delivers in order without waiting for a slow consumer', async () => {
    const got: string[] = []
    const emitter = new TokenEmitter(async (d) => {
      await new Promise((r) => setTimeout(r, 5))
      got.push(d.text)
    })
    for (const text of ['a', 'b', 'c']) emitter.emit({ index: 0, text })
    expect(got).toEqual([])
    await emitter.drain()
    expect(got).toEqual(['a', 'b', 'c'])
    emitter.throwIfFailed()
  })

  it('stops delivering after the consumer throws, and reports that error', async () => {
    const got: string[] = []
    const emitter = new TokenEmitter((d) => {
      if (d.text === 'b') throw new Error('client gone')
      got.push(d.text)
    })
    for (const text of ['a', 'b', 'c']) emitter.emit({ index: 0, text })
    await emitter.drain()
    expect(got).toEqual(['a'])
    expect(() => emitter.throwIfFailed()).toThrow('client gone')
  })
})

describe('import graph', () => {
  const here = dirname(fileURLToPath(import.meta.url))

  /** Packages a module loads at run time, through its relative imports (type-only ones are erased). */
  function runtimePackages(entry: string): Set<string> {
    const packages = new Set<string>()
    const seen = new Set<string>()
    const visit = (file: string) => {
      if (seen.has(file)) return
      seen.add(file)
      const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022)
      for (const node of source.statements) {
        let spec: ts.Expression | undefined
        if (ts.isImportDeclaration(node) && !node.importClause?.isTypeOnly) spec = node.moduleSpecifier
        else if (ts.isExportDeclaration(node) && !node.isTypeOnly) spec = node.moduleSpecifier
        if (!spec || !ts.isStringLiteral(spec)) continue
        if (spec.text.startsWith('.')) visit(resolve(dirname(file), spec.text.replace(/\.js$/, '.ts')))
        else packages.add(spec.text)
      }
    }
    visit(resolve(here, entry))
    return packages
  }

  it('finds onnxruntime-node behind the model registry (the check can fail)', () => {
    expect(runtimePackages('model-registry.ts')).toContain('onnxruntime-node')
  })

  it('keeps the text pipeline free of onnxruntime: Node built-ins and zod at most', () => {
    const packages = [...runtimePackages('text-pipeline.ts')]
    const allowed = (p: string) => p === 'zod' || builtinModules.includes(p.replace(/^node:/, ''))
    expect(packages.filter((p) => !allowed(p))).toEqual([])
  })
})
