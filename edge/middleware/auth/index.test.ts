import { describe, expect, it } from 'vitest'
import { bearerToken } from './index.js'

describe('bearerToken', () => {
  it.each([
    [undefined, null],
    ['', null],
    ['Bearer pgpt_abc', 'pgpt_abc'],
    ['bearer   pgpt_abc  ', 'pgpt_abc'],
    ['Basic dXNlcjpwYXNz', null],
    ['Bearer a b', null],
    ['Bearer', null],
  ])('%j → %j', (header, want) => {
    expect(bearerToken(header)).toBe(want)
  })
})
