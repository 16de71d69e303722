/**
 * The whole WikiText-2 test split (GPTQ join) tokenized by bwq = by transformers 5.17's AutoTokenizer, byte-level
 * BPE kinds (count, first ids, sha256 of all ids; test/fixtures/tokenizer/make_kinds.py).
 */
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readWikitext2 } from '../../src/eval/wikitext.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { BYTE_LEVEL_KINDS, expected, KINDS_DIR, sha256Int32 } from './tokenizer-kinds-fixture.js';

test('the byte-level kinds are there', () => {
  expect(BYTE_LEVEL_KINDS).toEqual(['gpt2-byte-level', 'llama3-byte-level', 'qwen2-byte-level']);
});

test.each(BYTE_LEVEL_KINDS)('%s: WikiText-2 token count and ids equal transformers', async (kind) => {
  const want = expected.kinds[kind]!.wikitext2;
  const ids = (await loadTokenizer(join(KINDS_DIR, kind))).encode(await readWikitext2());
  expect(ids.length).toBe(want.tokens);
  expect([...ids.subarray(0, want.head.length)]).toEqual(want.head);
  expect(sha256Int32(ids)).toBe(want.ids_sha256);
}, 120_000);
