/** Fine-tuning records: `n_epochs: 'auto'` scales with the training file's size. */
import { describe, expect, it } from 'vitest'
import { AUTO_HYPERPARAMETERS, autoEpochs, hyperparametersSchema } from './fine-tunes.js'

describe('autoEpochs', () => {
  it('gives small files enough passes (at most 25), mid-sized ones 3, large ones fewer (at least 1)', () => {
    expect(autoEpochs(200)).toBe(10) // a 200-line FAQ: 2,000 examples seen
    expect(autoEpochs(10)).toBe(25)
    expect(autoEpochs(0)).toBe(25)
    expect(autoEpochs(700)).toBe(3)
    expect(autoEpochs(8000)).toBe(3)
    expect(autoEpochs(10_000)).toBe(2)
    expect(autoEpochs(1_000_000)).toBe(1)
  })

  it("the defaults leave n_epochs 'auto' for the worker, and the schema takes it", () => {
    expect(AUTO_HYPERPARAMETERS.n_epochs).toBe('auto')
    expect(hyperparametersSchema.parse(AUTO_HYPERPARAMETERS)).toEqual(AUTO_HYPERPARAMETERS)
    expect(hyperparametersSchema.safeParse({ ...AUTO_HYPERPARAMETERS, n_epochs: 0 }).success).toBe(false)
  })
})
