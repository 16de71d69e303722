import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

/** Ids produced by the Hugging Face (Rust) tokenizer in test/fixtures/generate/make_fixtures.py. */
const reference = JSON.parse(readFileSync('test/fixtures/reference/tokenizer.json', 'utf8')) as {
  samples: { text: string; ids: number[]; decoded: string }[];
  test_text_ids_head: number[];
};

describe('tokenizer.json via tokenizers.js matches HF tokenizers', () => {
  for (const dir of ['models/sotu-llama', 'test/fixtures/tokenizer']) {
    test(`${dir}: reference samples encode and decode identically`, async () => {
      const tok = await loadTokenizer(dir);
      expect(tok.vocabSize).toBe(4096);
      for (const sample of reference.samples) {
        const ids = tok.encode(sample.text);
        expect(ids).toBeInstanceOf(Int32Array);
        expect([...ids]).toEqual(sample.ids);
        expect(tok.decode(ids)).toBe(sample.decoded);
      }
    });
  }

  test('first 4096 ids of data/sotu-test.txt', async () => {
    const tok = await loadTokenizer('models/sotu-llama');
    const text = readFileSync('data/sotu-test.txt', 'utf8');
    // A prefix long enough for > 4096 tokens; only the last word can differ from encoding the whole text.
    const ids = tok.encode(text.slice(0, 40_000));
    expect(ids.length).toBeGreaterThan(4200);
    expect([...ids.subarray(0, 4096)]).toEqual(reference.test_text_ids_head);
  });

  test('whole data/sotu-test.txt gives the reference token count', async () => {
    const tok = await loadTokenizer('models/sotu-llama');
    const summary = JSON.parse(readFileSync('test/fixtures/reference/reference.json', 'utf8')) as { test_text_tokens: number };
    const ids = tok.encode(readFileSync('data/sotu-test.txt', 'utf8'));
    expect(ids.length).toBe(summary.test_text_tokens);
    expect([...ids.subarray(0, 4096)]).toEqual(reference.test_text_ids_head);
  });

  test('special token text is recognized but none is added', async () => {
    const tok = await loadTokenizer('models/sotu-llama');
    const ids = tok.encode('a<|endoftext|>b');
    expect(ids.length).toBe(3);
    expect(ids[1]).toBe(0); // <|endoftext|> is the only special token, id 0
    expect(tok.encode('').length).toBe(0);
  });

  test('missing tokenizer.json names the expected path', async () => {
    const dir = tempDir('bwq-tok-');
    const error = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).file).toBe(join(dir, 'tokenizer.json'));
    expect((error as BwqError).message).toMatch(/tokenizer.json not found/);
  });

  test('invalid tokenizer.json', async () => {
    const dir = tempDir('bwq-tok-');
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    await expect(loadTokenizer(dir)).rejects.toThrow(/not valid JSON/);
    writeFileSync(join(dir, 'tokenizer.json'), '{"version": "1.0"}');
    await expect(loadTokenizer(dir)).rejects.toThrow(/no "model" object/);
  });
});
