/** Fine-tuning records: `n_epochs: 'auto'` scales with the training file's size. */
import { describe, expect, it } from 'vitest'
import { AUTO_HYPERPARAMETERS, autoEpochs, hyperparametersSchema, plannedEpochs } from './fine-tunes.js'

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

describe('plannedEpochs (PGPT_MAX_FINE_TUNE_STEPS)', () => {
  it("lowers 'auto' epochs so the steps fit the cap, at least one epoch", () => {
    // 200 examples: auto is 10 epochs, 500 steps of 4; a cap of 120 leaves 2 epochs (100 steps).
    expect(plannedEpochs('auto', 200, 200, 4, 50_000)).toEqual({ epochs: 10, steps: 500, ok: true })
    expect(plannedEpochs('auto', 200, 200, 4, 120)).toEqual({ epochs: 2, steps: 100, ok: true })
    // One epoch is already beyond the cap: refused.
    expect(plannedEpochs('auto', 200, 200, 4, 40)).toEqual({ epochs: 1, steps: 50, ok: false })
  })

  it('keeps a given n_epochs and refuses it beyond the cap', () => {
    expect(plannedEpochs(3, 200, 200, 4, 150)).toEqual({ epochs: 3, steps: 150, ok: true })
    expect(plannedEpochs(4, 200, 200, 4, 150)).toEqual({ epochs: 4, steps: 200, ok: false })
  })
})
