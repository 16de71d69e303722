/**
 * Bytes of a calibration or evaluation file → text, refusing what is not text: invalid UTF-8
 * (fatal TextDecoder; a leading BOM is dropped), any NUL character, or more than
 * MAX_CONTROL_FRACTION of the characters being control characters other than tab, line feed,
 * vertical tab, form feed and carriage return (C0 and C1 controls and DEL; ordinary text has
 * well under 1%). The same character check applies to the documents taken out of .json/.jsonl
 * files, where escapes such as "\u0000" can hide them.
 */
import { BwqError } from '../errors.js';

/** Largest fraction of control characters a text may have. */
export const MAX_CONTROL_FRACTION = 0.1;

/** The end of every "not text" refusal: what bwq reads (src/data/corpus-format.ts). */
export const ACCEPTED_INPUTS = 'expected UTF-8 text (.txt, .jsonl, .json), the same gzip-compressed (.gz), or .parquet';

/**
 * Decodes strict UTF-8; BwqError naming `file` (with the byte offset) when the bytes are not UTF-8.
 * `where` says which bytes they are when they are not the file's own (e.g. "of the decompressed data").
 */
export function decodeUtf8(bytes: Uint8Array, file: string, where?: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const at = `byte ${firstInvalidByte(bytes)}${where === undefined ? '' : ` ${where}`}`;
    throw new BwqError(`not UTF-8 text (invalid UTF-8 at ${at}); ${ACCEPTED_INPUTS}`, { file });
  }
}

/** Offset of the first byte that starts an invalid UTF-8 sequence. */
export function firstInvalidByte(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    const n = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (n === 0 || i + n > bytes.length) return i;
    for (let k = 1; k < n; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) return i;
    // overlong 3/4-byte forms, surrogates and code points above U+10FFFF
    const c1 = bytes[i + 1] ?? 0;
    if ((b === 0xe0 && c1 < 0xa0) || (b === 0xed && c1 > 0x9f) || (b === 0xf0 && c1 < 0x90) || (b === 0xf4 && c1 > 0x8f)) return i;
    i += n;
  }
  return bytes.length;
}

function isControl(code: number): boolean {
  if (code === 0x09 || code === 0x0a || code === 0x0b || code === 0x0c || code === 0x0d) return false;
  return code < 0x20 || (code >= 0x7f && code <= 0x9f);
}

/** BwqError naming `file` when `text` holds a NUL or is mostly control characters (see the file comment). */
export function checkLooksLikeText(text: string, file: string): void {
  const nul = text.indexOf('\u0000');
  if (nul >= 0) throw new BwqError(`not text: contains a NUL character (at character ${nul}); ${ACCEPTED_INPUTS}`, { file });
  let controls = 0;
  let chars = 0;
  for (const ch of text) {
    chars++;
    if (isControl(ch.codePointAt(0)!)) controls++;
  }
  if (chars > 0 && controls / chars > MAX_CONTROL_FRACTION) {
    const percent = ((100 * controls) / chars).toFixed(0);
    throw new BwqError(`not text: ${percent}% of its characters are control characters (at most ${100 * MAX_CONTROL_FRACTION}% allowed)`, { file });
  }
}
