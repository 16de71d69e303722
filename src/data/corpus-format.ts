/**
 * Which reader a calibration or evaluation file goes to, by its name:
 *   .txt (and any name not below)  plain UTF-8 text, taken as is
 *   .jsonl / .ndjson               JSON Lines (src/data/json-documents.ts)
 *   .json                          a JSON array, or JSON Lines as C4 and many Hugging Face exports name them
 *   .parquet                       a string column (src/data/parquet-reader.ts)
 * and any of these followed by .gz is gunzipped first (src/data/gzip-reader.ts), as C4's
 * `c4-train.00000-of-01024.json.gz`. In a directory only these names are read (corpusFileName).
 * When bytes that should be text are not, binaryContainerOf names the container they look like, so
 * the refusal can say "this is gzip data, name it .gz" instead of "invalid UTF-8 at byte 1".
 */
import { basename, extname } from 'node:path';

export type CorpusFormat = 'text' | 'jsonl' | 'json' | 'parquet';

export interface CorpusKind {
  format: CorpusFormat;
  /** the name ends in .gz: gunzip before reading `format` */
  gzip: boolean;
  /** the name (less .gz) has one of the extensions above, so a directory listing reads it */
  named: boolean;
}

const FORMATS: Readonly<Record<string, CorpusFormat>> = {
  '.txt': 'text',
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.json': 'json',
  '.parquet': 'parquet',
};

/** The extensions read from a directory, for messages and docs. */
export const CORPUS_EXTENSIONS = Object.keys(FORMATS);

export function corpusKindOf(path: string): CorpusKind {
  let name = basename(path).toLowerCase();
  const gzip = name.endsWith('.gz');
  if (gzip) name = name.slice(0, -'.gz'.length);
  const format = FORMATS[extname(name)];
  return { format: format ?? 'text', gzip, named: format !== undefined };
}

/** true for a file a directory corpus reads: one of the extensions (optionally + .gz), not hidden. */
export function corpusFileName(name: string): boolean {
  return !name.startsWith('.') && corpusKindOf(name).named;
}

/** What binary bytes are, by their magic number, when it is a container bwq knows; else undefined. */
export function binaryContainerOf(bytes: Uint8Array): string | undefined {
  const starts = (...magic: number[]): boolean => magic.every((b, i) => bytes[i] === b);
  if (starts(0x1f, 0x8b)) return 'gzip-compressed data (its name must end in .gz)';
  if (starts(0x50, 0x41, 0x52, 0x31)) return 'a parquet file (its name must end in .parquet)';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd-compressed data, which bwq does not read (decompress it, or recompress it with gzip)';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2-compressed data, which bwq does not read (decompress it, or recompress it with gzip)';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz-compressed data, which bwq does not read (decompress it, or recompress it with gzip)';
  if (starts(0x50, 0x4b, 0x03, 0x04)) return 'a zip archive, which bwq does not read (extract it)';
  return undefined;
}
