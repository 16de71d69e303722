/**
 * With --json every failure prints exactly one JSON object `{ "error", "file" }` on stdout besides the one
 * stderr line, for every command and for usage errors; without --json stdout stays empty.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { reportError } from '../../src/cli/main.js';
import { wantsJson } from '../../src/cli/output.js';
import { BwqError } from '../../src/errors.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();
const dir = tempDir('bwq-json-err-');
writeFileSync(join(dir, 'existing.txt'), 'x');

afterEach(() => vi.restoreAllMocks());

const cases: [string, string[], number, { error: RegExp; file: string | null }][] = [
  ['quantize: usage (no -o)', ['quantize', '--method', 'rtn'], 2, { error: /^-o\/--output OUT_DIR is required$/, file: null }],
  ['quantize: refused output', ['quantize', '--method', 'rtn', '-o', join(dir, 'existing.txt'), '--force'], 1,
    { error: /^output path exists and is not a directory$/, file: join(dir, 'existing.txt') }],
  ['eval: missing model', ['eval', join(dir, 'nowhere')], 1, { error: /^model directory not found$/, file: join(dir, 'nowhere') }],
  ['eval: bad flag value', ['eval', '--batch', '0'], 2, { error: /^--batch must be at least 1, got 0$/, file: null }],
  ['generate: usage', ['generate'], 2, { error: /^--prompt is required and must not be empty$/, file: null }],
  ['inspect: missing path', ['inspect', join(dir, 'nope')], 1, { error: /^no such file or directory$/, file: join(dir, 'nope') }],
  ['inspect: missing argument (commander)', ['inspect'], 2, { error: /^missing required argument 'PATH' \(see --help\)$/, file: null }],
  ['bench: usage', ['bench', '--m', 'x'], 2, { error: /^--m expects positive integers, got "x"$/, file: null }],
  ['unknown option (commander)', ['eval', '--frobnicate'], 2, { error: /^unknown option '--frobnicate' \(see --help\)$/, file: null }],
  ['unknown command (commander)', ['frobnicate'], 2, { error: /^unknown command 'frobnicate' \(see --help\)$/, file: null }],
];

describe('--json failures', () => {
  test.each(cases)('%s', async (_name, args, code, expected) => {
    const r = await runCli(...args, '--json');
    expect(r.code).toBe(code);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const object = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(object).sort()).toEqual(['error', 'file']);
    expect(object['error']).toMatch(expected.error);
    expect(object['file']).toBe(expected.file);
    // the stderr line says the same
    expect(r.stderr.trim()).toBe(`bwq: ${expected.file === null ? '' : `${expected.file}: `}${object['error'] as string}`);
    // and without --json nothing goes to stdout
    const plain = await runCli(...args);
    expect(plain.code).toBe(code);
    expect(plain.stdout).toBe('');
  });

  test('internal errors too', () => {
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => { out += String(c); return true; });
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(reportError(new RangeError('Invalid typed array length: 5'), true)).toBe(1);
    expect(JSON.parse(out)).toEqual({ error: 'internal error: Invalid typed array length: 5', file: null });
    out = '';
    expect(reportError(new BwqError('bad\nthing', { file: 'f.txt', exitCode: 3 }), true)).toBe(3);
    expect(JSON.parse(out)).toEqual({ error: 'bad thing', file: 'f.txt' });
  });

  test('wantsJson reads argv before parsing, up to --', () => {
    expect(wantsJson(['eval', '--json'])).toBe(true);
    expect(wantsJson(['eval'])).toBe(false);
    expect(wantsJson(['eval', '--', '--json'])).toBe(false);
  });
});
