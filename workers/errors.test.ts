import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { ApiError } from '../core/errors.js'
import { classify, INTERNAL_JOB_ERROR, PermanentError, TransientError, toJobError } from './errors.js'

describe('classify / toJobError', () => {
  const zodErr = (() => {
    try {
      z.object({ ms: z.number() }).parse({ ms: 'x' })
    } catch (e) {
      return e
    }
  })()

  it.each([
    [
      'PermanentError',
      new PermanentError('bad', { code: 'bad_input' }),
      'permanent',
      { message: 'bad', code: 'bad_input' },
    ],
    [
      'TransientError',
      new TransientError('later'),
      'transient',
      { message: 'later', code: 'transient_error' },
    ],
    [
      '4xx ApiError',
      new ApiError(404, 'no model', { code: 'model_not_found' }),
      'permanent',
      { message: 'no model', code: 'model_not_found' },
    ],
    [
      '5xx ApiError',
      new ApiError(500, 'load failed', { code: 'model_load_failed' }),
      'transient',
      { message: 'load failed', code: 'model_load_failed' },
    ],
    [
      'plain Error (its message may carry paths: kept for the logs only)',
      new Error("ENOENT: no such file or directory, open '/srv/pgpt/model-cache/x/onnx/model.onnx'"),
      'transient',
      { message: INTERNAL_JOB_ERROR, code: 'internal_error' },
    ],
    ['a string', 'weird', 'transient', { message: INTERNAL_JOB_ERROR, code: 'internal_error' }],
  ])('%s', (_name, err, cls, jobError) => {
    expect(classify(err)).toBe(cls)
    expect(toJobError(err)).toEqual(jobError)
  })

  it('a zod error is permanent and names the field', () => {
    expect(classify(zodErr)).toBe('permanent')
    expect(toJobError(zodErr)).toMatchObject({
      code: 'invalid_input',
      message: expect.stringMatching(/at ms/),
    })
  })
})
