/** The shapes of OpenAI-style list endpoints, shared by the route files. */
import { z } from '@hono/zod-openapi'

/** `{ object: 'list', data, first_id, last_id, has_more }` (fine-tuning lists leave the ids out). */
export const listOf = <T extends z.ZodTypeAny>(item: T) =>
  z.object({
    object: z.literal('list'),
    data: z.array(item),
    first_id: z.string().nullable().optional(),
    last_id: z.string().nullable().optional(),
    has_more: z.boolean(),
  })

/** The cursor query: `after` (the last id of the previous page) and `limit`. */
export const cursorQuery = (o: { maxLimit?: number; defaultLimit?: number; maxCursor?: number } = {}) =>
  z.object({
    after: z
      .string()
      .max(o.maxCursor ?? 128)
      .optional()
      .openapi({ description: 'Cursor: the last id of the previous page.' }),
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(o.maxLimit ?? 100)
      .default(o.defaultLimit ?? 20),
  })

/** A 200 response with a page of `item`s. */
export const pageOk = <T extends z.ZodTypeAny>(item: T, description: string) => ({
  200: { description, content: { 'application/json': { schema: listOf(item) } } },
})
