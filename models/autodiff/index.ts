export { gradients, pruneDeadNodes } from './grad.js'
export { type BackwardRule, type GradContext, RULES, ruleFor, unbroadcast } from './rules.js'
export { probeShapes, type Shapes } from './shapes.js'
