/**
 * Turning token ids into the text a client sees, one piece at a time:
 *
 * - `IncrementalDetokenizer` (the scheme of TGI's `decode_token`): decode a
 *   small window of ids twice, with and without the newest token, and emit the
 *   difference only when it does not end in U+FFFD, i.e. when the bytes so far
 *   form complete UTF-8 characters. Pieces concatenate to decode(all ids).
 * - `StopMatcher`: finds stop sequences in the text (across token
 *   boundaries), cuts exactly before the first one, and holds back any tail
 *   that could still be the start of a stop sequence.
 */

export type Decode = (ids: number[]) => string

export class IncrementalDetokenizer {
  private readonly ids: number[]
  private prefixOffset: number
  private readOffset: number

  /**
   * @param contextIds the last few prompt ids: some decoders (SentencePiece's
   *   Metaspace) drop a leading space at the start of a decode, so the window
   *   starts inside the prompt.
   */
  constructor(
    private readonly decode: Decode,
    contextIds: readonly number[] = [],
  ) {
    let context = contextIds.slice(-4)
    if (context.length && decode(context).endsWith('\uFFFD')) context = []
    this.ids = [...context]
    this.prefixOffset = 0
    this.readOffset = context.length
  }

  /** Adds one token; returns the new complete text ('' while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id)
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset))
    const newText = this.decode(this.ids.slice(this.prefixOffset))
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset
      this.readOffset = this.ids.length
      return newText.slice(prefixText.length)
    }
    return ''
  }

  /** Whatever is held back (an incomplete character decodes to U+FFFD). */
  flush(): string {
    if (this.readOffset === this.ids.length) return ''
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset))
    const newText = this.decode(this.ids.slice(this.prefixOffset))
    this.prefixOffset = this.readOffset
    this.readOffset = this.ids.length
    return newText.length > prefixText.length ? newText.slice(prefixText.length) : ''
  }
}

/**
 * The same contract for byte-level tokenizers, without re-decoding: each
 * token's bytes go through a streaming UTF-8 decoder, which holds back an
 * incomplete character until its last byte arrives. (WHATWG streaming decode
 * concatenates to the one-shot decode, U+FFFD for invalid bytes included.)
 */
export class ByteStreamDetokenizer {
  private readonly decoder = new TextDecoder('utf-8')

  constructor(private readonly bytesOf: (id: number) => Uint8Array) {}

  push(id: number): string {
    return this.decoder.decode(this.bytesOf(id), { stream: true })
  }

  flush(): string {
    return this.decoder.decode()
  }
}

export type Detokenizer = Pick<IncrementalDetokenizer, 'push' | 'flush'>

export interface StopResult {
  /** Text safe to emit now. */
  text: string
  /** A stop sequence was found; `text` ends right before it and nothing follows. */
  stopped: boolean
}

export class StopMatcher {
  private pending = ''
  private done = false

  constructor(private readonly stops: readonly string[]) {
    for (const s of stops) if (!s) throw new Error('StopMatcher: stop sequences must be non-empty')
  }

  push(text: string): StopResult {
    if (this.done) return { text: '', stopped: true }
    if (!this.stops.length) return { text, stopped: false }
    const buffer = this.pending + text
    // Earliest stop wins; emitted text never holds a stop's first character, so the match lies in `buffer`.
    let cut = -1
    for (const s of this.stops) {
      const i = buffer.indexOf(s)
      if (i >= 0 && (cut < 0 || i < cut)) cut = i
    }
    if (cut >= 0) {
      this.done = true
      this.pending = ''
      return { text: buffer.slice(0, cut), stopped: true }
    }
    const hold = this.partialSuffix(buffer)
    this.pending = buffer.slice(buffer.length - hold)
    return { text: buffer.slice(0, buffer.length - hold), stopped: false }
  }

  /** Text held back, released when generation ends for another reason. */
  flush(): string {
    const rest = this.done ? '' : this.pending
    this.pending = ''
    return rest
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of a stop sequence. */
  private partialSuffix(buffer: string): number {
    let best = 0
    for (const s of this.stops) {
      for (let len = Math.min(s.length - 1, buffer.length); len > best; len--) {
        if (buffer.endsWith(s.slice(0, len))) {
          best = len
          break
        }
      }
    }
    return best
  }
}
