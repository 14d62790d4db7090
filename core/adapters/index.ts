export * from './adapter-error.js'
export * from './local-queue.js'
export * from './memory-events.js'
export * from './sqlite-job-store.js'
