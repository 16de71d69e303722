/**
 * Incremental detokenization for streaming: after each new token, decode the whole generated id list
 * and hand out only the text beyond what was already handed out. While the decoded text ends in
 * U+FFFD (a UTF-8 sequence split across tokens, e.g. one byte-level token per byte of an emoji), the
 * new text is held back; finish() hands out whatever is left, U+FFFD included.
 */
import type { TextTokenizer } from '../model/tokenizer.js';

const REPLACEMENT = '\uFFFD';

export class TextStream {
  private readonly ids: number[] = [];
  private emitted = 0;
  private text = '';

  constructor(private readonly tokenizer: Pick<TextTokenizer, 'decode'>) {}

  /** Adds one token; returns the text now safe to print ('' while held back). */
  push(id: number): string {
    this.ids.push(id);
    this.text = this.tokenizer.decode(this.ids);
    if (this.text.endsWith(REPLACEMENT)) return '';
    return this.take();
  }

  /** The text not handed out yet (an incomplete trailing sequence included). */
  finish(): string {
    return this.take();
  }

  /** The whole decoded text so far. */
  get decoded(): string {
    return this.text;
  }

  private take(): string {
    // For byte-level BPE the decode of a longer id list extends the shorter one's text, so the new text
    // is the suffix past what was handed out (by length: text already printed cannot be taken back).
    const out = this.text.slice(this.emitted);
    this.emitted = Math.max(this.emitted, this.text.length);
    return out;
  }
}
