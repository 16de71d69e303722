/**
 * Documents of a JSON corpus (already decoded text):
 *  - JSON Lines (.jsonl, .ndjson): one JSON value per line, a string or an object whose `field`
 *    (default "text") is a string; blank lines are skipped.
 *  - .json: a JSON array of such values, one such value, or, when the file is not one JSON value,
 *    JSON Lines (the C4 shards `c4-train.*.json.gz` and many Hugging Face exports are JSON Lines
 *    named .json).
 * A null or empty text is skipped; any other missing or non-string field is an error naming the
 * line (or array item).
 */
import { BwqError } from '../errors.js';

export function documentsFromJsonLines(raw: string, field: string, path: string): string[] {
  const documents: string[] = [];
  let start = 0;
  let line = 0;
  while (start < raw.length) {
    const end = raw.indexOf('\n', start);
    const stop = end < 0 ? raw.length : end;
    line++;
    const text = raw.slice(start, stop).trim();
    start = stop + 1;
    if (text === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new BwqError(`line ${line}: invalid JSON`, { file: path });
    }
    const document = textOf(value, field, `line ${line}`, path);
    if (document.length > 0) documents.push(document);
  }
  return documents;
}

export function documentsFromJson(raw: string, field: string, path: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    // not one JSON value: JSON Lines, unless it opens an array (then it is a broken array)
    if (raw.trimStart().startsWith('[')) throw new BwqError('invalid JSON', { file: path });
    return documentsFromJsonLines(raw, field, path);
  }
  const items = Array.isArray(value) ? value : [value];
  const documents: string[] = [];
  items.forEach((item, i) => {
    const document = textOf(item, field, Array.isArray(value) ? `item ${i}` : 'the JSON value', path);
    if (document.length > 0) documents.push(document);
  });
  return documents;
}

function textOf(value: unknown, field: string, where: string, path: string): string {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const text = (value as Record<string, unknown>)[field];
    if (typeof text === 'string') return text;
    if (text === null) return '';
  }
  throw new BwqError(`${where}: no string field "${field}"${field === 'text' ? ' (name the text field with --text-field)' : ''}`, { file: path });
}
