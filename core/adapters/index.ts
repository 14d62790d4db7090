export * from './adapter-error.js'
export * from './fs-store.js'
export * from './local-queue.js'
export * from './memory-events.js'
export * from './sqlite-job-store.js'
// Loads @aws-sdk/client-sqs only when a queue is first used.
export * from './sqs-queue.js'
