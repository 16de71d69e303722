/**
 * Reads a text corpus for evaluation or calibration: one file, or a directory of files
 * (src/data/corpus-directory.ts), each read by the reader its name selects (src/data/corpus-format.ts):
 *  - `.txt` and any other name: plain UTF-8 text, taken as is (one document).
 *  - `.jsonl` / `.ndjson`, `.json`: JSON documents (src/data/json-documents.ts), their `text` field or
 *    the field named by `textField`.
 *  - `.parquet`: the `text` column, or the column named by `textField` (src/data/parquet-reader.ts).
 *  - any of these + `.gz`: gunzipped first (src/data/gzip-reader.ts).
 * Documents are joined with "\n\n" (the WikiText-2 convention used by GPTQ/QuaRot), within a file
 * and across the files of a directory. Whatever the name, text must be text (strict UTF-8, no NUL,
 * few control characters: src/data/text-decode.ts), so a binary file is refused instead of being
 * "evaluated"; bytes that look like a known container say so (binaryContainerOf).
 */
import { readFile, stat } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import { isErrnoError, plainCause } from '../fs/errno.js';
import { binaryContainerOf, corpusKindOf } from './corpus-format.js';
import { corpusFilesIn } from './corpus-directory.js';
import { gunzipCorpus } from './gzip-reader.js';
import { documentsFromJson, documentsFromJsonLines } from './json-documents.js';
import { parquetDocuments } from './parquet-reader.js';
import { ACCEPTED_INPUTS, checkLooksLikeText, decodeUtf8 } from './text-decode.js';
import { checkTextBytes, checkTextChars } from './text-limits.js';

export interface TextCorpusOptions {
  /** the JSON field or parquet column holding the text (default "text") */
  textField?: string;
}

/** The documents read from one file. */
export interface FileDocuments {
  file: string;
  documents: string[];
}

/** The documents of `path` (a file, or each corpus file of a directory in name order). */
export async function readCorpusDocuments(path: string, options: TextCorpusOptions = {}): Promise<FileDocuments[]> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) throw new BwqError('file not found', { file: path });
  const field = options.textField ?? 'text';
  if (info.isDirectory()) {
    const files = await corpusFilesIn(path);
    const read: FileDocuments[] = [];
    for (const file of files) read.push({ file, documents: await readFileDocuments(file, field) });
    return read;
  }
  if (!info.isFile()) throw new BwqError('not a regular file or directory', { file: path });
  return [{ file: path, documents: await readFileDocuments(path, field) }];
}

/** The corpus at `path` as one text: every document, "\n\n" between them. */
export async function readTextCorpus(path: string, options: TextCorpusOptions = {}): Promise<string> {
  const files = await readCorpusDocuments(path, options);
  const documents = files.flatMap((f) => f.documents);
  const chars = documents.reduce((sum, d) => sum + d.length, 2 * Math.max(0, documents.length - 1));
  checkTextChars(chars, path);
  return documents.join('\n\n');
}

async function readFileDocuments(file: string, field: string): Promise<string[]> {
  const kind = corpusKindOf(file);
  let bytes = await readBytes(file, kind.format === 'parquet' || kind.gzip);
  if (kind.gzip) bytes = await gunzipCorpus(bytes, file);
  let documents: string[];
  if (kind.format === 'parquet') {
    documents = await parquetDocuments(bytes, field, file);
  } else {
    const raw = decodeText(bytes, file, kind.gzip);
    documents = kind.format === 'jsonl' ? documentsFromJsonLines(raw, field, file)
      : kind.format === 'json' ? documentsFromJson(raw, field, file)
        : [raw];
  }
  if (documents.every((d) => d.trim().length === 0)) throw new BwqError('contains no text', { file });
  // a JSON escape (\u0000) or a parquet value can hold what the raw bytes check did not see
  if (kind.format !== 'text') checkLooksLikeText(documents.join('\n\n'), file);
  return documents;
}

async function readBytes(file: string, binary: boolean): Promise<Uint8Array> {
  const info = await stat(file).catch(() => undefined);
  if (info === undefined) throw new BwqError('file not found', { file });
  // text decodes to at most one character per byte; a binary container (parquet, .gz) may hold more
  if (!binary) checkTextBytes(info.size, file);
  try {
    return await readFile(file);
  } catch (error) {
    if (isErrnoError(error)) throw new BwqError(`cannot read: ${plainCause(error.code)}`, { file });
    if ((error as { code?: unknown }).code === 'ERR_FS_FILE_TOO_LARGE') throw new BwqError('is too large to read into memory (2 GiB or more)', { file });
    throw new BwqError(`cannot read: ${(error as Error).message}`, { file });
  }
}

/** Strict UTF-8 text (checkLooksLikeText), or a refusal that names the container the bytes are when bwq knows it. */
function decodeText(bytes: Uint8Array, file: string, gunzipped: boolean): string {
  try {
    const raw = decodeUtf8(bytes, file, gunzipped ? 'of the decompressed data' : undefined);
    checkLooksLikeText(raw, file);
    return raw;
  } catch (error) {
    const container = binaryContainerOf(bytes);
    if (container === undefined) throw error;
    throw new BwqError(`not text: ${gunzipped ? 'its decompressed data is' : 'it is'} ${container}; ${ACCEPTED_INPUTS}`, { file });
  }
}
