/** POST /v1/completions and POST /v1/chat/completions (OpenAI-compatible, with SSE streaming). */
import { createRoute, z } from '@hono/zod-openapi'
import { badRequest } from '../../core/errors.js'
import { handleGeneration } from '../generation/respond.js'
import {
  type ChatRequest,
  type CompletionRequest,
  chatRequest,
  chatResponse,
  completionRequest,
  completionResponse,
  generationErrors,
} from '../generation/schemas.js'
import { requireScope } from '../middleware/auth/index.js'
import { type EdgeApp, h, type RouteContext, security, valid } from './util.js'

const sse = {
  'text/event-stream': {
    schema: z
      .string()
      .openapi({ description: 'With stream: true, chunks as `data: {json}` lines, then `data: [DONE]`.' }),
  },
}

const completions = createRoute({
  method: 'post',
  path: '/v1/completions',
  tags: ['Generation'],
  summary: 'Create a completion',
  security,
  middleware: [requireScope('generate')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: completionRequest } } } },
  responses: {
    200: {
      description: 'The completion (or an SSE stream of chunks).',
      headers: z.object({ 'x-cache': z.enum(['HIT', 'MISS', 'BYPASS']).optional() }),
      content: { 'application/json': { schema: completionResponse }, ...sse },
    },
    ...generationErrors,
  },
})

const chat = createRoute({
  method: 'post',
  path: '/v1/chat/completions',
  tags: ['Generation'],
  summary: 'Create a chat completion',
  security,
  middleware: [requireScope('generate')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: chatRequest } } } },
  responses: {
    200: {
      description: 'The chat completion (or an SSE stream of chunks).',
      content: { 'application/json': { schema: chatResponse }, ...sse },
    },
    ...generationErrors,
  },
})

export function registerCompletions(app: EdgeApp, { deps, tokens }: RouteContext) {
  app.openapi(
    completions,
    h(async (c) => {
      const b = valid<CompletionRequest>(c, 'json')
      const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt[0]
      if (prompt === undefined) throw badRequest('prompt is required.', 'prompt')
      return handleGeneration(
        c,
        deps,
        tokens,
        {
          endpoint: 'completions',
          model: b.model,
          prompt,
          fields: b,
          maxTokens: b.max_tokens,
          logprobs: b.logprobs ?? null,
          echo: b.echo ?? false,
          stream: b.stream ?? false,
        },
        b.stream_options?.include_usage ?? false,
      )
    }),
  )
  app.openapi(
    chat,
    h(async (c) => {
      const b = valid<ChatRequest>(c, 'json')
      if (b.top_logprobs != null && !b.logprobs)
        throw badRequest('top_logprobs requires logprobs to be true.', 'top_logprobs')
      return handleGeneration(
        c,
        deps,
        tokens,
        {
          endpoint: 'chat.completions',
          model: b.model,
          messages: b.messages,
          fields: b,
          maxTokens: b.max_completion_tokens ?? b.max_tokens,
          logprobs: b.logprobs ? (b.top_logprobs ?? 0) : null,
          echo: false,
          stream: b.stream ?? false,
        },
        b.stream_options?.include_usage ?? false,
      )
    }),
  )
}
