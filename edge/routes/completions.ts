/** POST /v1/completions and POST /v1/chat/completions (OpenAI-compatible, with SSE streaming). */
import { createRoute, z } from '@hono/zod-openapi'
import { chatGeneration, completionGeneration } from '../../core/openai/generation-request.js'
import {
  type ChatRequest,
  type CompletionRequest,
  chatRequest,
  chatResponse,
  completionRequest,
  completionResponse,
  generationErrors,
} from '../../core/openai/schemas.js'
import { handleGeneration } from '../generation/respond.js'
import { scoped } from '../middleware/auth/index.js'
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
  ...scoped('generate'),
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
  ...scoped('generate'),
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
      return handleGeneration(
        c,
        deps,
        tokens,
        completionGeneration(b),
        b.stream_options?.include_usage ?? false,
      )
    }),
  )
  app.openapi(
    chat,
    h(async (c) => {
      const b = valid<ChatRequest>(c, 'json')
      return handleGeneration(c, deps, tokens, chatGeneration(b), b.stream_options?.include_usage ?? false)
    }),
  )
}
