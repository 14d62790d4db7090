/**
 * `pgpt`: the command line of PrometheusGPT. Each group lives in its own
 * module and is loaded only when used, so `pgpt keys` does not load onnxruntime.
 */
import { defineCommand, runMain } from 'citty'

const main = defineCommand({
  meta: {
    name: 'pgpt',
    description: 'PrometheusGPT: models, tokenizers, training, keys and the local stack',
  },
  subCommands: {
    model: () => import('./model.js').then((m) => m.default),
    tokenizer: () => import('./tokenizer.js').then((m) => m.default),
    keys: () => import('./keys.js').then((m) => m.default),
    train: () => import('./train.js').then((m) => m.default),
    serve: () => import('./serve.js').then((m) => m.default),
    worker: () => import('./worker.js').then((m) => m.default),
  },
})

// citty prints a thrown Error with its stack; a user needs the message (PGPT_DEBUG=1 keeps the stack).
const printError = console.error
console.error = (first?: unknown, ...rest: unknown[]) =>
  first instanceof Error && !process.env.PGPT_DEBUG
    ? printError(`error: ${first.message}`)
    : printError(first, ...rest)

runMain(main)
