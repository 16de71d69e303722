/**
 * The whole WikiText-2 test split (GPTQ join) tokenized by bwq = by transformers 5.17's AutoTokenizer, sentencepiece-style
 * BPE kinds (Llama-2, Mistral, CodeLlama; legacy true, false, absent; with and without byte fallback) (count, first ids, sha256 of all ids; test/fixtures/tokenizer/make_kinds.py).
 */
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readWikitext2 } from '../../src/eval/wikitext.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { SENTENCEPIECE_KINDS, expected, KINDS_DIR, sha256Int32 } from './tokenizer-kinds-fixture.js';

test('the sentencepiece-style kinds are there', () => {
  expect(SENTENCEPIECE_KINDS).toEqual(['llama-spm-legacy-false', 'llama-spm-legacy-true', 'llama-spm-no-byte-fallback', 'llama-spm-no-prefix-space', 'llama-spm-metaspace-first', 'mistral-spm', 'codellama-spm', 'spm-metaspace-split']);
});

test.each(SENTENCEPIECE_KINDS)('%s: WikiText-2 token count and ids equal transformers', async (kind) => {
  const want = expected.kinds[kind]!.wikitext2;
  const ids = (await loadTokenizer(join(KINDS_DIR, kind))).encode(await readWikitext2());
  expect(ids.length).toBe(want.tokens);
  expect([...ids.subarray(0, want.head.length)]).toEqual(want.head);
  expect(sha256Int32(ids)).toBe(want.ids_sha256);
}, 120_000);
