/**
 * Calibration and evaluation inputs must be text (src/data/text-decode.ts): random bytes or a binary
 * file renamed .txt are refused in one line naming the file, instead of a "successful" perplexity.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { readTextCorpus } from '../../src/data/text-corpus.js';
import { checkLooksLikeText, decodeUtf8, firstInvalidByte } from '../../src/data/text-decode.js';
import { BwqError } from '../../src/errors.js';
import { Rng } from '../../src/linalg/random.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();
const dir = tempDir('bwq-text-');

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => rng.nextUint32() & 0xff);
}

const random = join(dir, 'random.txt');
writeFileSync(random, randomBytes(65536, 1));
const renamed = join(dir, 'weights.txt');
copyFileSync('test/fixtures/safetensors/dtypes.safetensors', renamed);

afterEach(() => vi.restoreAllMocks());

async function refusal(path: string): Promise<BwqError> {
  const error = await readTextCorpus(path).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(BwqError);
  expect((error as BwqError).file).toBe(path);
  return error as BwqError;
}

describe('readTextCorpus refuses what is not text', () => {
  it('random bytes', async () => {
    expect((await refusal(random)).message).toMatch(/^not UTF-8 text \(invalid UTF-8 at byte \d+\); expected UTF-8 text \(\.txt, \.jsonl, \.json\), the same gzip-compressed \(\.gz\), or \.parquet$/);
  });

  it('a binary file renamed .txt', async () => {
    expect((await refusal(renamed)).message).toMatch(/^not (UTF-8 text|text: contains a NUL character)/);
  });

  it('valid UTF-8 with NULs (UTF-16 or a binary made of ASCII) and mostly control characters', async () => {
    const utf16 = join(dir, 'utf16.txt');
    writeFileSync(utf16, Buffer.from('hello world', 'utf16le'));
    expect((await refusal(utf16)).message).toBe('not text: contains a NUL character (at character 1); expected UTF-8 text (.txt, .jsonl, .json), the same gzip-compressed (.gz), or .parquet');
    const controls = join(dir, 'controls.txt');
    writeFileSync(controls, Uint8Array.from({ length: 1000 }, (_, i) => (i % 3 === 0 ? 0x41 : 1 + (i % 30))));
    expect((await refusal(controls)).message).toMatch(/^not text: \d+% of its characters are control characters \(at most 10% allowed\)$/);
    // a NUL hidden in a JSON escape
    const escaped = join(dir, 'escaped.jsonl');
    writeFileSync(escaped, `${JSON.stringify({ text: 'a\u0000b' })}\n`);
    expect((await refusal(escaped)).message).toMatch(/contains a NUL character/);
  });

  it('accepts ordinary text: tabs, CRLF, a BOM, non-ASCII, a few escape codes', async () => {
    const ok = join(dir, 'ok.txt');
    writeFileSync(ok, `\ufeffMr. Speaker,\tthe state of our union — é, 日本, 🙂 — is strong.\r\n\u001b[1mbold\u001b[0m\n`);
    expect(await readTextCorpus(ok)).toBe('Mr. Speaker,\tthe state of our union — é, 日本, 🙂 — is strong.\r\n\u001b[1mbold\u001b[0m\n');
  });

  it('decodeUtf8, firstInvalidByte and checkLooksLikeText directly', () => {
    expect(decodeUtf8(new TextEncoder().encode('añb'), 'f')).toBe('añb');
    expect(() => decodeUtf8(Uint8Array.from([0x61, 0x62, 0xc3, 0x28]), 'f')).toThrow(/invalid UTF-8 at byte 2/);
    expect(firstInvalidByte(Uint8Array.from([0xe2, 0x82]))).toBe(0); // truncated
    expect(firstInvalidByte(Uint8Array.from([0x61, 0xed, 0xa0, 0x80]))).toBe(1); // surrogate
    expect(firstInvalidByte(Uint8Array.from([0x61, 0xc0, 0x80]))).toBe(1); // overlong
    expect(firstInvalidByte(new TextEncoder().encode('ok 🙂'))).toBe(7);
    expect(() => checkLooksLikeText('abc\u0085\u0085', 'f')).toThrow(/40% of its characters/);
    expect(() => checkLooksLikeText('plain text', 'f')).not.toThrow();
  });
});

describe('the CLI refuses binary inputs in one line', () => {
  it('eval --dataset with random bytes', async () => {
    const r = await runCli('eval', 'test/fixtures/models/tiny-llama', '--dataset', random, '--threads', '1');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^bwq: ${random}: not UTF-8 text \\(invalid UTF-8 at byte \\d+\\); expected UTF-8 text \\(\\.txt, \\.jsonl, \\.json\\), the same gzip-compressed \\(\\.gz\\), or \\.parquet\\n$`));
  });

  it('quantize --calib with a binary file renamed .txt', async () => {
    const out = join(dir, 'out');
    const r = await runCli('quantize', '--method', 'rtn', '--calib', renamed, '-o', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^bwq: ${renamed}: not (UTF-8 text|text: contains a NUL)[^\\n]*\\n$`));
  });
});
