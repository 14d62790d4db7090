/** GenerationOutput (core/protocol.ts) rendered in OpenAI's response and chunk shapes. */
import type { GenerationChoice, GenerationOutput, TokenLogprob, Usage } from '../protocol.js'

export const openaiUsage = (u: Usage) => ({
  prompt_tokens: u.promptTokens,
  completion_tokens: u.completionTokens,
  total_tokens: u.promptTokens + u.completionTokens,
})

const chatLogprob = (l: TokenLogprob) => ({
  token: l.token,
  logprob: l.logprob,
  bytes: l.bytes,
  top_logprobs: l.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
})

export function completionLogprobs(list: TokenLogprob[] | null) {
  if (!list) return null
  let offset = 0
  const text_offset: number[] = []
  for (const l of list) {
    text_offset.push(offset)
    offset += l.token.length
  }
  return {
    tokens: list.map((l) => l.token),
    token_logprobs: list.map((l) => l.logprob),
    top_logprobs: list.map((l) => Object.fromEntries(l.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  }
}

export const completionId = (jobId: string) => `cmpl-${jobId}`
export const chatId = (jobId: string) => `chatcmpl-${jobId}`
const now = () => Math.floor(Date.now() / 1000)

export function completionBody(jobId: string, out: GenerationOutput, created = now()) {
  return {
    id: completionId(jobId),
    object: 'text_completion' as const,
    created,
    model: out.model,
    choices: out.choices.map((ch: GenerationChoice) => ({
      index: ch.index,
      text: ch.text,
      logprobs: completionLogprobs(ch.logprobs),
      finish_reason: ch.finishReason,
    })),
    usage: openaiUsage(out.usage),
  }
}

export function chatBody(jobId: string, out: GenerationOutput, created = now()) {
  return {
    id: chatId(jobId),
    object: 'chat.completion' as const,
    created,
    model: out.model,
    choices: out.choices.map((ch) => ({
      index: ch.index,
      message: { role: 'assistant' as const, content: ch.text, refusal: null },
      logprobs: ch.logprobs ? { content: ch.logprobs.map(chatLogprob), refusal: null } : null,
      finish_reason: ch.finishReason,
    })),
    usage: openaiUsage(out.usage),
    system_fingerprint: null,
  }
}

/** Builds stream chunks for one endpoint; `usage: null` appears on every chunk when include_usage is set. */
export function chunker(
  endpoint: 'completions' | 'chat.completions',
  jobId: string,
  model: string,
  includeUsage: boolean,
) {
  const created = now()
  const chat = endpoint === 'chat.completions'
  const base = {
    id: chat ? chatId(jobId) : completionId(jobId),
    object: chat ? ('chat.completion.chunk' as const) : ('text_completion' as const),
    created,
    model,
    ...(chat ? { system_fingerprint: null } : {}),
    ...(includeUsage ? { usage: null } : {}),
  }
  return {
    role(index: number) {
      return {
        ...base,
        choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
      }
    },
    text(index: number, text: string, logprob?: TokenLogprob) {
      if (chat)
        return {
          ...base,
          choices: [
            {
              index,
              delta: { content: text },
              logprobs: logprob ? { content: [chatLogprob(logprob)], refusal: null } : null,
              finish_reason: null,
            },
          ],
        }
      return {
        ...base,
        choices: [
          { index, text, logprobs: logprob ? completionLogprobs([logprob]) : null, finish_reason: null },
        ],
      }
    },
    finish(index: number, reason: 'stop' | 'length') {
      if (chat) return { ...base, choices: [{ index, delta: {}, logprobs: null, finish_reason: reason }] }
      return { ...base, choices: [{ index, text: '', logprobs: null, finish_reason: reason }] }
    },
    usage(u: Usage) {
      return { ...base, choices: [], usage: openaiUsage(u) }
    },
  }
}
