/**
 * Calibration and evaluation readers (src/data/text-corpus.ts and its per-format readers) on files written by
 * the real tools: Python's gzip module and pyarrow (test/fixtures/data/make_readers.py). Every good file holds
 * the documents listed in readers.expected.json; the bad ones are refused in one line naming the file.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { loadCalibrationWindows, sampleWindows } from '../../src/data/calibration.js';
import { corpusDigest } from '../../src/data/corpus-digest.js';
import { corpusKindOf } from '../../src/data/corpus-format.js';
import { gunzipCorpus } from '../../src/data/gzip-reader.js';
import { readCorpusDocuments, readTextCorpus } from '../../src/data/text-corpus.js';
import { checkTextBytes, checkTextChars } from '../../src/data/text-limits.js';
import { BwqError } from '../../src/errors.js';
import { Rng } from '../../src/linalg/random.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DATA = join(ROOT, 'test/fixtures/data');
const expected = JSON.parse(readFileSync(join(DATA, 'readers.expected.json'), 'utf8')) as {
  head_chars: number;
  documents: string[];
  files: Record<string, { rows?: number; row_groups?: number; codec?: string; records?: number }>;
};
const TEXT = expected.documents.join('\n\n');
const ACCEPTED = 'expected UTF-8 text (.txt, .jsonl, .json), the same gzip-compressed (.gz), or .parquet';
const tempDir = tempDirs();
const dir = tempDir('bwq-readers-');

function fixture(name: string): string {
  return join(DATA, name);
}

async function refusal(path: string, options: { textField?: string } = {}): Promise<string> {
  const error = await readTextCorpus(path, options).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(BwqError);
  return (error as BwqError).oneLine();
}

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => rng.nextUint32() & 0xff);
}

describe('the fixtures are what the tests assume', () => {
  it('the first document is the beginning of data/sotu-test.txt; the parquet files use the codecs named', () => {
    const sotu = readFileSync(join(ROOT, 'data/sotu-test.txt'), 'utf8');
    expect(expected.documents[0]).toBe(sotu.slice(0, expected.head_chars));
    expect(expected.documents).toHaveLength(26);
    expect(expected.documents.at(-1)).toBe('Unicode: café, naïve, 東京, emoji 🚀, ‘quotes’ — dashes…');
    expect(expected.files['docs-snappy.parquet']).toEqual({ rows: 26, row_groups: 1, codec: 'SNAPPY' });
    expect(expected.files['docs-zstd.parquet']).toEqual({ rows: 26, row_groups: 1, codec: 'ZSTD' });
    expect(expected.files['docs-gzip.parquet']).toEqual({ rows: 26, row_groups: 1, codec: 'GZIP' });
    expect(expected.files['docs-none.parquet']).toEqual({ rows: 26, row_groups: 1, codec: 'UNCOMPRESSED' });
    // 26 documents + a null + an empty text, 4 rows per group
    expect(expected.files['docs-rowgroups.parquet']).toEqual({ rows: 28, row_groups: 7, codec: 'SNAPPY' });
  });
});

describe('every accepted format reads the same documents', () => {
  const files = ['docs.jsonl.gz', 'docs.json.gz', 'docs-snappy.parquet', 'docs-zstd.parquet', 'docs-gzip.parquet',
    'docs-none.parquet', 'docs-rowgroups.parquet'];
  it.each(files)('%s', async (name) => {
    const read = await readCorpusDocuments(fixture(name));
    expect(read).toHaveLength(1);
    expect(read[0]!.file).toBe(fixture(name));
    expect(read[0]!.documents).toEqual(expected.documents);
    expect(await readTextCorpus(fixture(name))).toBe(TEXT);
  });

  it('docs.txt.gz is one document: the joined text', async () => {
    expect((await readCorpusDocuments(fixture('docs.txt.gz')))[0]!.documents).toEqual([TEXT]);
    expect(await readTextCorpus(fixture('docs.txt.gz'))).toBe(TEXT);
  });

  it('--text-field names another parquet column (and JSON field)', async () => {
    expect(await readTextCorpus(fixture('docs-content.parquet'), { textField: 'content' })).toBe(TEXT);
    expect(await readTextCorpus(fixture('docs-content.parquet'), { textField: 'meta' }))
      .toBe(expected.documents.map((_, i) => `doc ${i}`).join('\n\n'));
    const json = join(dir, 'body.jsonl');
    writeFileSync(json, `${JSON.stringify({ body: 'first' })}\n${JSON.stringify({ body: null })}\n${JSON.stringify({ body: 'second' })}\n`);
    expect(await readTextCorpus(json, { textField: 'body' })).toBe('first\n\nsecond');
  });

  it('a directory: its corpus files in name order, README.md ignored, joined with a blank line', async () => {
    const read = await readCorpusDocuments(fixture('dir'));
    expect(read.map((r) => r.file)).toEqual(['1-head.jsonl.gz', '2-middle.parquet', '3-tail.txt'].map((f) => join(fixture('dir'), f)));
    expect(read.map((r) => r.documents.length)).toEqual([1, 24, 1]);
    expect(await readTextCorpus(fixture('dir'))).toBe(TEXT);
  });

  it('.json: a JSON array, one JSON value, or JSON Lines', async () => {
    const array = join(dir, 'array.json');
    writeFileSync(array, JSON.stringify([{ text: 'a' }, 'b', { text: '' }]));
    expect(await readTextCorpus(array)).toBe('a\n\nb');
    const one = join(dir, 'one.json');
    writeFileSync(one, JSON.stringify({ text: 'only' }, null, 2));
    expect(await readTextCorpus(one)).toBe('only');
    const lines = join(dir, 'lines.json');
    writeFileSync(lines, '{"text": "x"}\n{"text": "y"}\n');
    expect(await readTextCorpus(lines)).toBe('x\n\ny');
  });

  it('the name decides the reader, case-insensitively; other names are text', () => {
    expect(corpusKindOf('c4-train.00000-of-01024.json.gz')).toEqual({ format: 'json', gzip: true, named: true });
    expect(corpusKindOf('TRAIN.PARQUET')).toEqual({ format: 'parquet', gzip: false, named: true });
    expect(corpusKindOf('wiki.test.raw')).toEqual({ format: 'text', gzip: false, named: false });
    expect(corpusKindOf('notes.gz')).toEqual({ format: 'text', gzip: true, named: false });
  });
});

describe('token counts and calibration windows', () => {
  it('a parquet file tokenizes as data/sotu-test.txt does over its first document (2345 tokens), 3104 in all', async () => {
    const tokenizer = await loadTokenizer(join(ROOT, 'models/sotu-llama'));
    const ids = tokenizer.encode(await readTextCorpus(fixture('docs-zstd.parquet')));
    expect(ids.length).toBe(3104);
    expect(tokenizer.encode(expected.documents[0]!).length).toBe(2345);
    // the transformers reference (test/fixtures/reference/reference.json) tokenizes the whole file to 110207
    const sotu = tokenizer.encode(readFileSync(join(ROOT, 'data/sotu-test.txt'), 'utf8'));
    expect(sotu.length).toBe(110207);
    expect(Array.from(ids.subarray(0, 2345))).toEqual(Array.from(sotu.subarray(0, 2345)));
  });

  it('calibration windows from a .jsonl.gz and from a directory equal those of the same text', async () => {
    const tokenizer = await loadTokenizer(join(ROOT, 'models/sotu-llama'));
    const want = sampleWindows(tokenizer.encode(TEXT), 8, 128, 3);
    for (const input of [fixture('docs.jsonl.gz'), fixture('dir')]) {
      const windows = await loadCalibrationWindows(input, tokenizer, { nsamples: 8, seqlen: 128, seed: 3, vocabSize: 4096 });
      expect(windows.textTokens).toBe(3104);
      expect(Array.from(windows.starts)).toEqual(Array.from(want.starts));
      expect(Array.from(windows.ids)).toEqual(Array.from(want.ids));
    }
    const content = await loadCalibrationWindows(fixture('docs-content.parquet'), tokenizer, { nsamples: 8, seqlen: 128, seed: 3, textField: 'content' });
    expect(Array.from(content.ids)).toEqual(Array.from(want.ids));
  });
});

describe('bad input is refused in one line naming the file', () => {
  const cases: [string, string][] = [
    ['bad-truncated.jsonl.gz', 'truncated gzip data (unexpected end of file)'],
    ['bad-latin1.txt.gz', `not UTF-8 text (invalid UTF-8 at byte 6 of the decompressed data); ${ACCEPTED}`],
    ['bad-notext.parquet', 'no column "text" (columns: id, body); name the text column with --text-field'],
    ['docs-content.parquet', 'no column "text" (columns: content, meta); name the text column with --text-field'],
    ['bad-inttext.parquet', 'column "text" is not a string column (it is INT64)'],
    ['bad-listtext.parquet', 'column "text" is not a string column (it is list)'],
    ['bad-binary.parquet', 'row 2 (counting from 0): column "text" is not UTF-8 text (invalid UTF-8 at byte 3 of the value)'],
    ['bad-corrupt.parquet', 'truncated parquet file (it does not end with "PAR1", so its footer is missing)'],
  ];
  it.each(cases)('%s', async (name, message) => {
    expect(await refusal(fixture(name))).toBe(`${fixture(name)}: ${message}`);
  });

  it('a parquet column or JSON field that is not there', async () => {
    expect(await refusal(fixture('docs-snappy.parquet'), { textField: 'body' }))
      .toBe(`${fixture('docs-snappy.parquet')}: no column "body" (columns: id, text); name the text column with --text-field`);
    expect(await refusal(fixture('docs.json.gz'), { textField: 'content' }))
      .toBe(`${fixture('docs.json.gz')}: line 1: no string field "content"`);
    const ids = join(dir, 'ids.jsonl.gz');
    writeFileSync(ids, gzipSync('{"id": 1}\n'));
    expect(await refusal(ids)).toBe(`${ids}: line 1: no string field "text" (name the text field with --text-field)`);
  });

  it('random bytes under each name', async () => {
    const bytes = randomBytes(4096, 7);
    const parquet = join(dir, 'random.parquet');
    writeFileSync(parquet, bytes);
    expect(await refusal(parquet)).toBe(`${parquet}: not a parquet file (it does not start with "PAR1")`);
    const gz = join(dir, 'random.jsonl.gz');
    writeFileSync(gz, bytes);
    expect(await refusal(gz)).toBe(`${gz}: named .gz but is not gzip-compressed (no gzip header)`);
    // gzip framing around random bytes: a corrupt deflate stream
    const framed = join(dir, 'framed.txt.gz');
    writeFileSync(framed, Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]), Buffer.from(bytes)]));
    expect(await refusal(framed)).toMatch(new RegExp(`^${framed}: corrupt gzip data \\(.+\\)$`));
    // random bytes inside a valid gzip
    const inner = join(dir, 'inner.jsonl.gz');
    writeFileSync(inner, gzipSync(bytes));
    expect(await refusal(inner)).toMatch(new RegExp(`^${inner}: not UTF-8 text \\(invalid UTF-8 at byte \\d+ of the decompressed data\\); `));
  });

  it('a container under the wrong name says what it is', async () => {
    const gz = join(dir, 'gzipped.jsonl');
    copyFileSync(fixture('docs.jsonl.gz'), gz);
    expect(await refusal(gz)).toBe(`${gz}: not text: it is gzip-compressed data (its name must end in .gz); ${ACCEPTED}`);
    const parquet = join(dir, 'table.txt');
    copyFileSync(fixture('docs-snappy.parquet'), parquet);
    expect(await refusal(parquet)).toBe(`${parquet}: not text: it is a parquet file (its name must end in .parquet); ${ACCEPTED}`);
    const zstd = join(dir, 'data.jsonl');
    writeFileSync(zstd, Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from(randomBytes(64, 2))]));
    expect(await refusal(zstd)).toBe(`${zstd}: not text: it is zstd-compressed data, which bwq does not read (decompress it, or recompress it with gzip); ${ACCEPTED}`);
    const nested = join(dir, 'nested.txt.gz');
    writeFileSync(nested, gzipSync(readFileSync(fixture('docs.txt.gz'))));
    expect(await refusal(nested)).toBe(`${nested}: not text: its decompressed data is gzip-compressed data (its name must end in .gz); ${ACCEPTED}`);
  });

  it('NULs hidden in a parquet value or a JSON escape; only null and empty texts', async () => {
    expect(await refusal(fixture('bad-nul.parquet'))).toBe(`${fixture('bad-nul.parquet')}: not text: contains a NUL character (at character 7); ${ACCEPTED}`);
    expect(await refusal(fixture('bad-empty.parquet'))).toBe(`${fixture('bad-empty.parquet')}: contains no text`);
    const gz = join(dir, 'nul.jsonl.gz');
    writeFileSync(gz, gzipSync(`${JSON.stringify({ text: 'a\u0000b' })}\n`));
    expect(await refusal(gz)).toMatch(/: not text: contains a NUL character \(at character 1\)/);
    const empty = join(dir, 'empty.jsonl.gz');
    writeFileSync(empty, gzipSync('{"text": ""}\n{"text": null}\n'));
    expect(await refusal(empty)).toBe(`${empty}: contains no text`);
  });

  it('a directory with no corpus files, and one with a bad file names that file', async () => {
    const none = join(dir, 'none');
    mkdirSync(none);
    writeFileSync(join(none, 'README.md'), '# readme\n');
    writeFileSync(join(none, '.hidden.txt'), 'hidden\n');
    mkdirSync(join(none, 'sub.txt'));
    expect(await refusal(none)).toBe(`${none}: directory has no corpus files (names ending in .txt, .jsonl, .ndjson, .json, .parquet, optionally followed by .gz)`);
    const mixed = join(dir, 'mixed');
    cpSync(fixture('dir'), mixed, { recursive: true });
    copyFileSync(fixture('bad-inttext.parquet'), join(mixed, '4-bad.parquet'));
    expect(await refusal(mixed)).toBe(`${join(mixed, '4-bad.parquet')}: column "text" is not a string column (it is INT64)`);
  });

  it('size limits: what one text can hold', async () => {
    const gz = gzipSync(Buffer.alloc(4096, 0x61));
    await expect(gunzipCorpus(gz, 'big.txt.gz', 1024)).rejects.toThrow('decompresses to more than 1.0 KiB, more than one text can hold; use a part of it');
    expect(Buffer.from(await gunzipCorpus(gz, 'big.txt.gz', 4096)).equals(Buffer.alloc(4096, 0x61))).toBe(true);
    expect(() => checkTextBytes(2048, 'big.txt', 1024)).toThrow('is 2.0 KiB, more than one text can hold (1.0 KiB); use a part of it');
    expect(() => checkTextChars(2000, 'dir', 1000)).toThrow('its texts add up to 2000 characters, more than one text can hold (1000); use a part of them');
    expect(() => checkTextChars(1000, 'dir', 1000)).not.toThrow();
  });
});

describe('corpusDigest (the calibration input in fingerprints and reports)', () => {
  it('of a file: the sha256 of its bytes', async () => {
    const sha = createHash('sha256').update(readFileSync(fixture('docs.jsonl.gz'))).digest('hex');
    expect(await corpusDigest(fixture('docs.jsonl.gz'))).toBe(sha);
  });

  it('of a directory: changes with its corpus files, not with the files it ignores', async () => {
    const copy = join(dir, 'digest');
    cpSync(fixture('dir'), copy, { recursive: true });
    const lines = ['1-head.jsonl.gz', '2-middle.parquet', '3-tail.txt']
      .map((f) => `${f} ${createHash('sha256').update(readFileSync(join(copy, f))).digest('hex')}\n`).join('');
    const before = await corpusDigest(copy);
    expect(before).toBe(createHash('sha256').update(lines).digest('hex'));
    writeFileSync(join(copy, 'NOTES.md'), 'ignored\n');
    expect(await corpusDigest(copy)).toBe(before);
    writeFileSync(join(copy, '3-tail.txt'), 'changed\n');
    expect(await corpusDigest(copy)).not.toBe(before);
  });
});
