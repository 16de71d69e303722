/**
 * `--text-field NAME` of `bwq eval` and `bwq quantize`: the JSON field or parquet column that holds the
 * text of a .jsonl/.json/.parquet corpus (default "text"; src/data/text-corpus.ts).
 */
import { usageError } from '../errors.js';
import type { TextCorpusOptions } from '../data/text-corpus.js';

export const DEFAULT_TEXT_FIELD = 'text';
export const TEXT_FIELD_HELP = 'JSON field or parquet column holding the text of .jsonl/.json/.parquet inputs';

/** The corpus options of the flag ({} for the default field); a usage error for an empty name. */
export function parseTextField(value: string | undefined): TextCorpusOptions {
  if (value === undefined || value === DEFAULT_TEXT_FIELD) return {};
  if (value.trim() === '') throw usageError('--text-field must name a JSON field or parquet column, got an empty name');
  return { textField: value };
}
