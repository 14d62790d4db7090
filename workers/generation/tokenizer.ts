/**
 * The text side of a model folder: `tokenizer.json` + `tokenizer_config.json`
 * through @huggingface/tokenizers, and the chat template (from
 * tokenizer_config.json's `chat_template` or a `chat_template.jinja` file)
 * rendered with @huggingface/jinja, as transformers' `apply_chat_template`
 * does with `add_generation_prompt=True`.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Template } from '@huggingface/jinja'
import { Tokenizer } from '@huggingface/tokenizers'
import type { ChatMessage } from '../../core/protocol.js'
import {
  renderChatTemplate,
  requestBounds,
  TemplateBoundsError,
  tokenizerRegexProblems,
} from '../../models/byo/text-safety.js'
import { GenerationError, invalidParameter } from './errors.js'

type Json = Record<string, unknown>

/** GPT-2's byte ↔ printable-character table used by ByteLevel BPE. */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = []
  for (let b = 33; b <= 126; b++) bs.push(b)
  for (let b = 161; b <= 172; b++) bs.push(b)
  for (let b = 174; b <= 255; b++) bs.push(b)
  const cs = [...bs]
  let n = 0
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b)
      cs.push(256 + n++)
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]), b]))
}

const specialTokenText = (v: unknown): string | undefined =>
  typeof v === 'string'
    ? v
    : v && typeof v === 'object' && 'content' in v
      ? String((v as Json).content)
      : undefined

const usesByteLevel = (node: unknown): boolean => {
  if (!node || typeof node !== 'object') return false
  const n = node as Json
  if (n.type === 'ByteLevel') return true
  return Array.isArray(n.decoders) && n.decoders.some(usesByteLevel)
}

export class ModelTokenizer {
  private readonly byteDecoder: Map<string, number> | null
  private readonly template: Template | null
  private readonly specialTokens: Record<string, string>
  readonly eosTokenIds: number[]
  readonly bosTokenId: number | null
  /**
   * The decoder is exactly ByteLevel (GPT-2, Llama 3, Qwen2, ours): decoding
   * is "token bytes, concatenated, as UTF-8", so text can stream from bytes.
   */
  readonly plainByteLevel: boolean
  private readonly specialIds: Set<number>
  private readonly bytesCache = new Map<number, Uint8Array>()

  constructor(
    private readonly tokenizer: Tokenizer,
    tokenizerJson: Json,
    private readonly config: Json,
    chatTemplate: string | null,
  ) {
    this.byteDecoder = usesByteLevel(tokenizerJson.decoder) ? byteLevelDecoder() : null
    this.plainByteLevel = (tokenizerJson.decoder as Json | null)?.type === 'ByteLevel'
    this.specialIds = new Set(
      [...tokenizer.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id),
    )
    this.template = chatTemplate ? new Template(chatTemplate) : null
    this.specialTokens = {}
    for (const key of [
      'bos_token',
      'eos_token',
      'unk_token',
      'pad_token',
      'sep_token',
      'cls_token',
      'mask_token',
    ]) {
      const text = specialTokenText(config[key])
      if (text !== undefined) this.specialTokens[key] = text
    }
    const idOf = (key: string) => {
      const text = this.specialTokens[key]
      return text === undefined ? undefined : tokenizer.token_to_id(text)
    }
    const eos = idOf('eos_token')
    this.eosTokenIds = eos === undefined ? [] : [eos]
    this.bosTokenId = idOf('bos_token') ?? null
  }

  get hasChatTemplate(): boolean {
    return this.template !== null
  }

  /** Token ids of a completion prompt (with the tokenizer's BOS etc. when it adds them). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids
  }

  /** Text of ids, special tokens skipped. */
  decode(ids: number[]): string {
    if (!ids.length) return ''
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false })
  }

  /** The text of one token as a client sees it (may hold U+FFFD for a partial character). */
  tokenText(id: number): string {
    return this.tokenizer.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false })
  }

  /** The UTF-8 bytes one token stands for (partial characters included). */
  tokenBytes(id: number): number[] {
    const raw = this.tokenizer.id_to_token(id)
    if (raw !== undefined) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(raw)
      if (m) return [Number.parseInt(m[1], 16)]
      if (this.byteDecoder && !this.tokenizer.get_added_tokens_decoder().has(id)) {
        const bytes: number[] = []
        for (const ch of raw) {
          const b = this.byteDecoder.get(ch)
          if (b === undefined) return [...Buffer.from(this.tokenText(id), 'utf8')]
          bytes.push(b)
        }
        return bytes
      }
    }
    return [...Buffer.from(this.tokenText(id), 'utf8')]
  }

  /** Whether `decode` skips this id (a special added token). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id)
  }

  /** `tokenBytes`, cached, as the bytes `decode` would produce (empty for special tokens). */
  decodeBytes(id: number): Uint8Array {
    let bytes = this.bytesCache.get(id)
    if (!bytes) {
      bytes = this.specialIds.has(id) ? new Uint8Array(0) : Uint8Array.from(this.tokenBytes(id))
      this.bytesCache.set(id, bytes)
    }
    return bytes
  }

  /** The prompt text for chat messages, ending with the assistant's turn opening. */
  applyChatTemplate(messages: ChatMessage[]): string {
    if (!this.template)
      throw invalidParameter('messages', 'This model has no chat template; use /v1/completions.')
    // Bounded: a tenant's template runs on this worker's only thread (models/byo/text-safety.ts).
    const chars = messages.reduce((n, m) => n + (typeof m.content === 'string' ? m.content.length : 0), 0)
    try {
      return renderChatTemplate(
        this.template,
        { messages, add_generation_prompt: true, ...this.specialTokens },
        requestBounds(chars),
      )
    } catch (err) {
      if (err instanceof Error && 'status' in err) throw err
      if (err instanceof TemplateBoundsError)
        throw invalidParameter('messages', `The chat template exceeded its bounds: ${err.message}.`)
      throw invalidParameter(
        'messages',
        `The chat template failed: ${err instanceof Error ? err.message : err}`,
      )
    }
  }

  /** Chat prompts carry their special tokens in the template text: no extra BOS. */
  encodeChat(messages: ChatMessage[]): number[] {
    return this.encode(this.applyChatTemplate(messages), false)
  }

  get addsBos(): boolean {
    return this.config.add_bos_token === true
  }
}

export async function loadTokenizer(folder: string): Promise<ModelTokenizer> {
  const tokenizerJson = JSON.parse(await readFile(join(folder, 'tokenizer.json'), 'utf8')) as Json
  const config = JSON.parse(
    await readFile(join(folder, 'tokenizer_config.json'), 'utf8').catch(() => '{}'),
  ) as Json
  let template: string | null = null
  const t = config.chat_template
  if (typeof t === 'string') template = t
  else if (Array.isArray(t)) {
    const named = t as Array<{ name?: string; template?: string }>
    template = (named.find((x) => x.name === 'default') ?? named[0])?.template ?? null
  }
  if (!template) template = await readFile(join(folder, 'chat_template.jinja'), 'utf8').catch(() => null)
  // Models published before publish-time checks existed: a pattern that backtracks without bound would freeze
  // this worker (and lose its job lease) on a short prompt, so the model is refused instead.
  const unsafe = tokenizerRegexProblems(tokenizerJson)
  if (unsafe.length)
    throw new GenerationError(500, `The model's tokenizer cannot be served: ${unsafe.join('; ')}`, {
      code: 'model_load_failed',
    })
  return new ModelTokenizer(new Tokenizer(tokenizerJson, config), tokenizerJson, config, template)
}
