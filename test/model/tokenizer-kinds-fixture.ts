/**
 * test/fixtures/tokenizer/kinds/expected.json, written by test/fixtures/tokenizer/make_kinds.py with transformers
 * 5.17's AutoTokenizer; shared by the tokenizer-kinds tests.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const KINDS_DIR = 'test/fixtures/tokenizer/kinds';
const EXPECTED_FILE = join(KINDS_DIR, 'expected.json');

export interface KindExpectation {
  transformers_class: string;
  strings: { text: string; ids: number[]; ids_with_special: number[]; decoded: string }[];
  wikitext2: { tokens: number; tokens_with_special: number; ids_sha256: string; head: number[] };
  literal_wikitext2_tokens: number;
}

if (!existsSync(EXPECTED_FILE)) {
  throw new Error(`${EXPECTED_FILE} is missing: run python3 test/fixtures/tokenizer/make_kinds.py (transformers 5.17)`);
}
export const expected = JSON.parse(readFileSync(EXPECTED_FILE, 'utf8')) as { transformers: string; kinds: Record<string, KindExpectation> };
export const KINDS = Object.keys(expected.kinds);
export const BYTE_LEVEL_KINDS = KINDS.filter((k) => k.includes('byte-level'));
export const SENTENCEPIECE_KINDS = KINDS.filter((k) => !k.includes('byte-level'));

export function sha256Int32(ids: Int32Array): string {
  return createHash('sha256').update(Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength)).digest('hex');
}
