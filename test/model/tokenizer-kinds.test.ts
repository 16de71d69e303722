/**
 * bwq tokenizes as transformers 5.17's AutoTokenizer does, for every tokenizer kind: ids, ids with special tokens,
 * decoded text of the sample strings, against test/fixtures/tokenizer/kinds/expected.json written by
 * test/fixtures/tokenizer/make_kinds.py (transformers 5.17, tokenizers 0.23); the whole WikiText-2 test split is
 * compared in tokenizer-wikitext-*.test.ts.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { readWikitext2 } from '../../src/eval/wikitext.js';
import { transformersTokenizerClass } from '../../src/model/tokenizer-class.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { tempDirs } from '../helpers/temp-dirs.js';
import { expected, KINDS, KINDS_DIR } from './tokenizer-kinds-fixture.js';

const tempDir = tempDirs();

function readJsonFile(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

describe('fixtures come from transformers 5.17 and cover every kind', () => {
  test('kinds', () => {
    expect(expected.transformers).toBe('5.17.0');
    expect(KINDS).toEqual(expect.arrayContaining([
      'gpt2-byte-level', 'llama3-byte-level', 'qwen2-byte-level', 'llama-spm-legacy-false', 'llama-spm-legacy-true',
      'llama-spm-no-byte-fallback', 'llama-spm-no-prefix-space', 'llama-spm-metaspace-first', 'mistral-spm',
      'codellama-spm', 'spm-metaspace-split',
    ]));
  });
});

describe.each(KINDS)('%s: bwq = transformers AutoTokenizer', (kind) => {
  const dir = join(KINDS_DIR, kind);
  const want = expected.kinds[kind]!;

  test('picks the class transformers picks', () => {
    const config = readJsonFile(join(dir, 'config.json'));
    const tokenizerConfig = readJsonFile(join(dir, 'tokenizer_config.json'));
    const choice = transformersTokenizerClass({
      modelType: config['model_type'] as string,
      configTokenizerClass: undefined,
      tokenizerClass: tokenizerConfig['tokenizer_class'] as string,
    });
    expect(choice).toMatchObject({ kind: 'reproduced', cls: want.transformers_class });
  });

  test('ids, ids with special tokens and decoded text of every sample string', async () => {
    const tok = await loadTokenizer(dir);
    expect(tok.pipeline).toContain(want.transformers_class);
    for (const sample of want.strings) {
      expect({ text: sample.text, ids: [...tok.encode(sample.text)] }).toEqual({ text: sample.text, ids: sample.ids });
      expect({ text: sample.text, ids: [...tok.encodeWithSpecialTokens(sample.text)] })
        .toEqual({ text: sample.text, ids: sample.ids_with_special });
      expect({ text: sample.text, decoded: tok.decode(sample.ids) }).toEqual({ text: sample.text, decoded: sample.decoded });
    }
  });
});

describe('where transformers departs from tokenizer.json', () => {
  test('LlamaTokenizer legacy false: Metaspace "first" instead of the Prepend + Replace normalizer', async () => {
    const dir = join(KINDS_DIR, 'llama-spm-legacy-false');
    const followed = await loadTokenizer(dir);
    const literal = await loadTokenizer(dir, { rules: 'tokenizer.json' });
    const sample = expected.kinds['llama-spm-legacy-false']!.strings.find((s) => s.text === ' Hello world')!;
    expect([...followed.encode(sample.text)]).toEqual(sample.ids);
    // tokenizer.json alone prepends a second "▁": ["▁▁", "H", "e", ...] is longer
    expect(literal.encode(sample.text).length).toBeGreaterThan(sample.ids.length);
    expect(literal.pipeline).toMatch(/rules: tokenizer\.json/);
  });

  test('rules "tokenizer.json" reproduces the tokenizers library on the file alone (no byte fallback kind)', async () => {
    const kind = expected.kinds['llama-spm-no-byte-fallback']!;
    expect(kind.literal_wikitext2_tokens).not.toBe(kind.wikitext2.tokens); // transformers drops unknown characters
    const literal = await loadTokenizer(join(KINDS_DIR, 'llama-spm-no-byte-fallback'), { rules: 'tokenizer.json' });
    expect(literal.encode(await readWikitext2()).length).toBe(kind.literal_wikitext2_tokens);
  }, 120_000);
});

describe('tokenizer class choice (transformers 5.17 AutoTokenizer)', () => {
  test.each([
    [{ modelType: 'mistral', tokenizerClass: 'LlamaTokenizerFast' }, 'TokenizersBackend'],
    [{ modelType: 'llama', tokenizerClass: 'LlamaTokenizerFast' }, 'LlamaTokenizer'],
    [{ modelType: 'llama', tokenizerClass: undefined }, 'TokenizersBackend'],
    [{ modelType: 'llama', tokenizerClass: 'PreTrainedTokenizerFast' }, 'TokenizersBackend'],
    [{ modelType: 'qwen2', tokenizerClass: 'PreTrainedTokenizerFast' }, 'Qwen2Tokenizer'],
    [{ modelType: 'qwen3', tokenizerClass: 'PreTrainedTokenizerFast' }, 'TokenizersBackend'],
    [{ modelType: 'qwen3', tokenizerClass: undefined }, 'Qwen2Tokenizer'],
    [{ modelType: 'gpt2', tokenizerClass: 'GPT2TokenizerFast' }, 'GPT2Tokenizer'],
    [{ modelType: undefined, tokenizerClass: 'NoSuchTokenizer' }, 'TokenizersBackend'],
  ])('%o → %s', (inputs, cls) => {
    expect(transformersTokenizerClass({ configTokenizerClass: undefined, ...inputs })).toMatchObject({ kind: 'reproduced', cls });
  });

  test('a class transformers rebuilds and bwq does not reproduce is refused in one line naming tokenizer_config.json', async () => {
    expect(transformersTokenizerClass({ modelType: 'llama', configTokenizerClass: undefined, tokenizerClass: 'GemmaTokenizerFast' }))
      .toMatchObject({ kind: 'unreproduced', name: 'GemmaTokenizer' });
    const dir = tempDir('bwq-tok-kind-');
    cpSync(join(KINDS_DIR, 'llama-spm-legacy-false'), dir, { recursive: true });
    const config = readJsonFile(join(dir, 'tokenizer_config.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, tokenizer_class: 'GemmaTokenizer' }));
    const error = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).file).toBe(join(dir, 'tokenizer_config.json'));
    expect((error as BwqError).message).toMatch(/GemmaTokenizer/);
    expect((error as BwqError).message).not.toMatch(/\n/);
    // the file as written still loads when asked for
    await expect(loadTokenizer(dir, { rules: 'tokenizer.json' })).resolves.toBeDefined();
  });
});
