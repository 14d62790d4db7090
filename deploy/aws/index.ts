export * from './autoscaling.js'
export * from './names.js'
export * from './queue.js'
export * from './settings.js'
