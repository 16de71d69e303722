/**
 * Reads a text corpus for evaluation or calibration.
 *  - `.jsonl` / `.ndjson`: one JSON object per line; its `text` field (or the field named by
 *    `textField`) is taken; empty texts are skipped.
 *  - `.json`: an array of strings or of objects with a `text` field.
 *  - anything else: plain UTF-8 text, taken as is.
 * Documents are joined with "\n\n" (the WikiText-2 convention used by GPTQ/QuaRot). Whatever the
 * extension, the file must be text (strict UTF-8, no NUL, few control characters:
 * src/data/text-decode.ts), so a binary file is refused instead of being "evaluated".
 */
import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { BwqError } from '../errors.js';
import { isErrnoError, plainCause } from '../fs/errno.js';
import { checkLooksLikeText, decodeUtf8 } from './text-decode.js';

export interface TextCorpusOptions {
  textField?: string;
}

export async function readTextCorpus(path: string, options: TextCorpusOptions = {}): Promise<string> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) throw new BwqError('file not found', { file: path });
  if (!info.isFile()) throw new BwqError('not a regular file', { file: path });
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new BwqError(`cannot read: ${isErrnoError(error) ? plainCause(error.code) : (error as Error).message}`, { file: path });
  }
  const raw = decodeUtf8(bytes, path);
  checkLooksLikeText(raw, path);
  const field = options.textField ?? 'text';
  const extension = extname(path).toLowerCase();
  const documents =
    extension === '.jsonl' || extension === '.ndjson'
      ? documentsFromJsonLines(raw, field, path)
      : extension === '.json'
        ? documentsFromJson(raw, field, path)
        : [raw];
  const text = documents.join('\n\n');
  if (text.trim().length === 0) throw new BwqError('contains no text', { file: path });
  if (documents.length !== 1 || documents[0] !== raw) checkLooksLikeText(text, path);
  return text;
}

function documentsFromJsonLines(raw: string, field: string, path: string): string[] {
  const documents: string[] = [];
  const lines = raw.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new BwqError(`line ${i + 1}: invalid JSON`, { file: path });
    }
    documents.push(textOf(value, field, `line ${i + 1}`, path));
  }
  return documents.filter((d) => d.length > 0);
}

function documentsFromJson(raw: string, field: string, path: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new BwqError('invalid JSON', { file: path });
  }
  if (!Array.isArray(value)) throw new BwqError(`expected a JSON array of strings or of objects with "${field}"`, { file: path });
  return value.map((item, i) => textOf(item, field, `item ${i}`, path)).filter((d) => d.length > 0);
}

function textOf(value: unknown, field: string, where: string, path: string): string {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as Record<string, unknown>)[field] === 'string') {
    return (value as Record<string, string>)[field]!;
  }
  throw new BwqError(`${where}: no string field "${field}"`, { file: path });
}
