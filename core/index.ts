export * from './config.js'
export * from './errors.js'
export * from './ids.js'
export * from './ports/index.js'
