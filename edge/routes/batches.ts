/** The Batch API (OpenAI's): being built; registers nothing yet. */
import type { EdgeApp, RouteContext } from './util.js'

export function registerBatches(_app: EdgeApp, _ctx: RouteContext) {}
