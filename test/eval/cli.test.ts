/** `bwq eval` through the CLI entry (in process): output formats and one-line errors. */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';

const ROOT = join(import.meta.dirname, '..', '..');
const TINY = join(ROOT, 'test/fixtures/models/tiny-llama');
let tmp: string;

const bwq = runCli;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-eval-cli-'));
  await writeFile(join(tmp, 'short.txt'), 'Mr. Speaker, the state of our union is strong.');
  await writeFile(join(tmp, 'empty.txt'), '   \n');
  await writeFile(join(tmp, 'docs.jsonl'), `${JSON.stringify({ text: 'Fellow citizens of the Senate and House of Representatives.' })}\n`.repeat(40));
  await cp(TINY, join(tmp, 'no-tokenizer'), { recursive: true });
  await rm(join(tmp, 'no-tokenizer', 'tokenizer.json'));
  await cp(TINY, join(tmp, 'bert'), { recursive: true });
  const cfg = JSON.parse(await readFile(join(TINY, 'config.json'), 'utf8'));
  await writeFile(join(tmp, 'bert', 'config.json'), JSON.stringify({ ...cfg, model_type: 'bert', architectures: ['BertForMaskedLM'] }));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('bwq eval', () => {
  test('--json prints one object with the documented fields; matches the reference ppl', async () => {
    const r = await bwq('eval', TINY, '--seqlen', '64', '--max-windows', '4', '--threads', '1', '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ backend: 'onnx', seqlen: 64, windows: 4, tokens: 252 });
    expect(Math.abs(s.ppl / 5800.208180580103 - 1)).toBeLessThan(1e-3);
    for (const k of ['ppl', 'meanNll', 'seconds', 'tokensPerSecond']) expect(typeof s[k]).toBe('number');
    expect(r.stderr).toBe(''); // no progress noise with --json
  });

  test('human output and default seqlen clamped to max_position_embeddings (128)', async () => {
    const r = await bwq('eval', TINY, '--max-windows', '2', '--threads', '1', '--dataset', join(tmp, 'docs.jsonl'));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/perplexity\s+\d+\.\d{4}/);
    expect(r.stdout).toMatch(/predicted in 2 windows of 128/);
    expect(r.stdout).toMatch(/tokens\/s/);
  });

  const errors: [string, () => string[], RegExp, number][] = [
    ['missing tokenizer', () => [join(tmp, 'no-tokenizer')], /^bwq: .*no-tokenizer\/tokenizer\.json: tokenizer\.json not found/, 1],
    ['seqlen above max_position_embeddings', () => [TINY, '--seqlen', '256'], /^bwq: .*tiny-llama\/config\.json: --seqlen 256 exceeds the model's max_position_embeddings 128/, 2],
    ['text shorter than one window', () => [TINY, '--dataset', join(tmp, 'short.txt')], /^bwq: .*short\.txt: text has \d+ tokens, fewer than one window of 128/, 1],
    ['empty text', () => [TINY, '--dataset', join(tmp, 'empty.txt')], /^bwq: .*empty\.txt: contains no text/, 1],
    ['missing dataset', () => [TINY, '--dataset', join(tmp, 'nope.txt')], /^bwq: .*nope\.txt: file not found/, 1],
    ['unknown architecture', () => [join(tmp, 'bert')], /^bwq: .*bert\/config\.json: .*bert/i, 1],
    ['missing model dir', () => [join(tmp, 'nowhere')], /^bwq: .*nowhere: model directory not found/, 1],
    ['bad --seqlen', () => [TINY, '--seqlen', '12x'], /^bwq: --seqlen must be an integer, got "12x"/, 2],
    ['bad --batch', () => [TINY, '--batch', '0'], /^bwq: --batch must be at least 1, got 0/, 2],
    ['bad --backend', () => [TINY, '--backend', 'gpu'], /^bwq: --backend must be one of onnx, native, got "gpu"/, 2],
    ['bad --device', () => [TINY, '--backend', 'native', '--device', 'gpu'], /^bwq: --device must be one of auto, cpu, cuda, got "gpu"/, 2],
    ['--device without the native backend', () => [TINY, '--device', 'cpu'], /^bwq: --device applies to --backend native only/, 2],
    ['unknown flag', () => [TINY, '--frobnicate'], /^bwq: unknown option '--frobnicate'/, 2],
  ];
  test.each(errors)('%s', async (_name, args, message, code) => {
    const r = await bwq('eval', ...args(), '--threads', '1');
    expect(r.code).toBe(code);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});
