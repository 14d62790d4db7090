/**
 * The PrometheusGPT tokenizer: a byte-level BPE trained by `BpeTrainer`,
 * stored as Hugging Face `tokenizer.json` + `tokenizer_config.json` (ChatML
 * chat template), loaded and run by `@huggingface/tokenizers`, with chat
 * templates rendered by `@huggingface/jinja` — the same libraries transformers.js uses.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Template } from '@huggingface/jinja'
import { Tokenizer } from '@huggingface/tokenizers'
import { BpeTrainer } from './bpe.js'

export const ENDOFTEXT = '<|endoftext|>'
export const IM_START = '<|im_start|>'
export const IM_END = '<|im_end|>'
export const SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

/** ChatML, as Qwen2 and SmolLM write it. */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"

export interface TokenizerFiles {
  /** `tokenizer.json` content. */
  tokenizer: Record<string, unknown>
  /** `tokenizer_config.json` content. */
  config: Record<string, unknown>
}

export interface TrainTokenizerOptions {
  /** Total vocabulary, special tokens included; default 4096. */
  vocabSize?: number
  minFrequency?: number
  /** Written as model_max_length. */
  maxLength?: number
}

/** Trains a byte-level BPE on `texts` and returns the two Hugging Face tokenizer files. */
export function trainTokenizer(texts: Iterable<string>, o: TrainTokenizerOptions = {}): TokenizerFiles {
  const trainer = new BpeTrainer()
  for (const t of texts) trainer.add(t)
  const { vocab, merges } = trainer.train({
    vocabSize: o.vocabSize ?? 4096,
    specialTokens: SPECIAL_TOKENS,
    minFrequency: o.minFrequency,
  })
  return tokenizerFiles(Object.fromEntries(vocab), merges, o.maxLength ?? 2048)
}

function tokenizerFiles(
  vocab: Record<string, number>,
  merges: [string, string][],
  maxLength: number,
): TokenizerFiles {
  const added = SPECIAL_TOKENS.map((content) => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }))
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  }
  const config = {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...t }) => [String(id), t])),
    bos_token: ENDOFTEXT,
    eos_token: ENDOFTEXT,
    pad_token: ENDOFTEXT,
    unk_token: null,
    additional_special_tokens: [IM_START, IM_END],
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
  }
  return { tokenizer, config }
}

export async function saveTokenizer(dir: string, files: TokenizerFiles): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'tokenizer.json'), `${JSON.stringify(files.tokenizer, null, 2)}\n`)
  await writeFile(join(dir, 'tokenizer_config.json'), `${JSON.stringify(files.config, null, 2)}\n`)
}

export async function readTokenizerFiles(dir: string): Promise<TokenizerFiles> {
  const [tokenizer, config] = await Promise.all(
    ['tokenizer.json', 'tokenizer_config.json'].map(async (f) =>
      JSON.parse(await readFile(join(dir, f), 'utf8')),
    ),
  )
  return { tokenizer, config }
}

export interface ChatMessage {
  role: string
  content: string
}

export interface PrometheusTokenizer {
  readonly vocabSize: number
  readonly bosTokenId: number
  readonly eosTokenId: number
  readonly padTokenId: number
  /** Special tokens embedded in the text (e.g. `<|im_start|>`) are matched as single ids. */
  encode(text: string): number[]
  decode(ids: number[], o?: { skipSpecialTokens?: boolean }): string
  tokenToId(token: string): number | undefined
  /** Renders `chat_template`; returns ids unless `tokenize: false`. */
  applyChatTemplate(messages: ChatMessage[], o: { addGenerationPrompt?: boolean; tokenize: false }): string
  applyChatTemplate(messages: ChatMessage[], o?: { addGenerationPrompt?: boolean; tokenize?: true }): number[]
}

/** Wraps the two files in `@huggingface/tokenizers`. */
export function createTokenizer(files: TokenizerFiles): PrometheusTokenizer {
  const tok = new Tokenizer(files.tokenizer, files.config)
  const cfg = files.config as {
    bos_token?: string
    eos_token?: string
    pad_token?: string
    chat_template?: string
  }
  const id = (t: string | undefined, what: string) => {
    const found = t === undefined ? undefined : tok.token_to_id(t)
    if (found === undefined) throw new Error(`tokenizer: ${what} '${t}' is not in the vocabulary`)
    return found
  }
  const template = cfg.chat_template ? new Template(cfg.chat_template) : null
  const specials = Object.fromEntries(
    ['bos_token', 'eos_token', 'pad_token'].map((k) => [k, (cfg as never)[k]]),
  )
  const encode = (text: string) => tok.encode(text, { add_special_tokens: false }).ids
  function applyChatTemplate(
    messages: ChatMessage[],
    o: { addGenerationPrompt?: boolean; tokenize?: boolean } = {},
  ): string & number[] {
    if (!template) throw new Error('tokenizer: no chat_template in tokenizer_config.json')
    const text = template.render({
      messages,
      add_generation_prompt: o.addGenerationPrompt ?? false,
      ...specials,
    })
    return (o.tokenize === false ? text : encode(text)) as string & number[]
  }
  return {
    vocabSize: tok.get_vocab(true).size,
    bosTokenId: id(cfg.bos_token, 'bos_token'),
    eosTokenId: id(cfg.eos_token, 'eos_token'),
    padTokenId: id(cfg.pad_token, 'pad_token'),
    encode,
    decode: (ids, o = {}) =>
      tok.decode(ids, {
        skip_special_tokens: o.skipSpecialTokens ?? false,
        clean_up_tokenization_spaces: false,
      }),
    tokenToId: (t) => tok.token_to_id(t),
    applyChatTemplate,
  }
}

export async function loadTokenizer(dir: string): Promise<PrometheusTokenizer> {
  return createTokenizer(await readTokenizerFiles(dir))
}
