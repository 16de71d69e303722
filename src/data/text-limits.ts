/**
 * The most text bwq reads as one corpus: one JavaScript string, at most buffer.constants.MAX_STRING_LENGTH
 * UTF-16 code units (2^29 − 24 in V8 on 64-bit machines). A UTF-8 byte is at most one code unit, so
 * that many bytes always decode. Past it, readers refuse in one line instead of a RangeError.
 */
import { constants } from 'node:buffer';
import { BwqError } from '../errors.js';
import { formatSize } from '../fs/size.js';

export const MAX_TEXT_CHARS = constants.MAX_STRING_LENGTH;

/** BwqError naming `file` when a text file of `bytes` bytes may not fit in one text. */
export function checkTextBytes(bytes: number, file: string, max = MAX_TEXT_CHARS): void {
  if (bytes > max) throw new BwqError(`is ${formatSize(bytes)}, more than one text can hold (${formatSize(max)}); use a part of it`, { file });
}

/** BwqError naming `path` when its documents, joined, are more characters than one text can hold. */
export function checkTextChars(chars: number, path: string, max = MAX_TEXT_CHARS): void {
  if (chars > max) throw new BwqError(`its texts add up to ${chars} characters, more than one text can hold (${max}); use a part of them`, { file: path });
}
