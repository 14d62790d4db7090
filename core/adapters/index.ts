export * from './adapter-error.js'
export * from './fs-store.js'
export * from './local-queue.js'
export * from './memory-events.js'
// The S3 and SQS adapters load their AWS SDK only when first used.
export * from './s3-store.js'
export * from './sqlite-job-store.js'
export * from './sqs-queue.js'
