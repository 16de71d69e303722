/**
 * gzip-compressed calibration and evaluation files (.jsonl.gz, .json.gz, .txt.gz, …): the bytes
 * after gunzip (every member of a multi-member file, as `gzip -d` does), through Node's zlib.
 * A truncated or corrupt file is refused in one line; so is one whose content would be larger than
 * one JavaScript string can hold (src/data/text-limits.ts).
 */
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { BwqError } from '../errors.js';
import { formatSize } from '../fs/size.js';
import { MAX_TEXT_CHARS } from './text-limits.js';

const gunzipAsync = promisify(gunzip);

export async function gunzipCorpus(bytes: Uint8Array, file: string, maxBytes = MAX_TEXT_CHARS): Promise<Uint8Array> {
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) {
    throw new BwqError('named .gz but is not gzip-compressed (no gzip header)', { file });
  }
  try {
    return await gunzipAsync(bytes, { maxOutputLength: maxBytes });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new BwqError(`decompresses to more than ${formatSize(maxBytes)}, more than one text can hold; use a part of it`, { file });
    }
    if (code === 'Z_BUF_ERROR') throw new BwqError('truncated gzip data (unexpected end of file)', { file });
    throw new BwqError(`corrupt gzip data (${(error as Error).message})`, { file });
  }
}
