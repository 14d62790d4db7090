/** Ids with readable prefixes (`job_…`, `file_…`), time-ordered so listings sort by creation. */

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz'

/** `prefix_` + 9 chars of time (ms, base36) + 12 random chars. Sorts by creation time. */
export function newId(prefix: string): string {
  const time = Date.now().toString(36).padStart(9, '0')
  const bytes = crypto.getRandomValues(new Uint8Array(12))
  let rand = ''
  for (const b of bytes) rand += ALPHABET[b % 36]
  return `${prefix}_${time}${rand}`
}
