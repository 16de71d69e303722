/**
 * `bwq generate` through the CLI entry (in process), with the engine replaced by a fake session
 * (vi.mock of src/runtime/engine.ts) over the tiny-llama fixture: streamed stdout, the stderr timing
 * line, --json, and one-line argument errors raised before the model or the engine is touched.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelDir } from '../../src/model/model-dir.js';
import { loadTokenizer, type TextTokenizer } from '../../src/model/tokenizer.js';
import type { LogitsWanted, OpenRuntimeOptions, RuntimeSession } from '../../src/runtime/session.js';
import { runCli } from '../helpers/run-cli.js';

const engine = vi.hoisted(() => ({ script: [] as number[], opened: [] as unknown[] }));

vi.mock('../../src/runtime/engine.js', () => ({
  openRuntime: async (dir: ModelDir, options: OpenRuntimeOptions): Promise<RuntimeSession> => {
    engine.opened.push(options);
    let position = 0;
    let calls = 0;
    const vocab = dir.config.vocabSize;
    return {
      config: dir.config,
      device: 'fake (test)',
      batch: 1,
      maxSeq: options.maxSeq ?? dir.config.maxPositionEmbeddings,
      get position() {
        return position;
      },
      residentBytes: 0,
      reset() {
        position = 0;
        calls = 0;
      },
      forward(_ids: Int32Array, t: number, _logits: LogitsWanted): Float32Array {
        position += t;
        const out = new Float32Array(vocab);
        out[engine.script[calls++] ?? 7] = 1;
        return out;
      },
      nll: () => ({ sum: 0, count: 0 }),
      close() {},
    };
  },
}));

const ROOT = join(import.meta.dirname, '..', '..');
const TINY = join(ROOT, 'test/fixtures/models/tiny-llama'); // max_position_embeddings 128, eos 2
const EOS = 2;
let tokenizer: TextTokenizer;
let tmp: string;

beforeAll(async () => {
  tokenizer = await loadTokenizer(TINY);
  tmp = await mkdtemp(join(tmpdir(), 'bwq-generate-cli-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  engine.opened = [];
});

describe('bwq generate', () => {
  test('streams the generated text to stdout, one timing line on stderr, stops at eos', async () => {
    const ids = Array.from(tokenizer.encode(' of the United States'));
    engine.script = [...ids, EOS, 5, 5];
    const r = await runCli('generate', TINY, '--prompt', 'The state', '--device', 'cpu');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${tokenizer.decode(ids)}\n`);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(
      new RegExp(`^bwq: prefill ${tokenizer.encode('The state').length} tokens in \\d+\\.\\d+ s \\(\\d+ tok/s\\), decode ${ids.length} tokens in \\d+\\.\\d+ s \\(\\d+ tok/s\\) on fake \\(test\\); stop: eos\\n$`),
    );
    expect(engine.opened).toEqual([{ device: 'cpu', maxSeq: tokenizer.encode('The state').length + 64, batch: 1 }]);
  });

  test('--json: one object with the documented fields, nothing streamed', async () => {
    engine.script = [11, 12, 13, 14, 15];
    const r = await runCli('generate', TINY, '--prompt', 'Fellow citizens', '--max-new-tokens', '3', '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const s = JSON.parse(r.stdout);
    expect(Object.keys(s).sort()).toEqual(['decode', 'device', 'model', 'prefill', 'prompt', 'promptTokens', 'stopReason', 'text', 'tokens'].sort());
    expect(s).toMatchObject({
      model: TINY,
      device: 'fake (test)',
      prompt: 'Fellow citizens',
      promptTokens: tokenizer.encode('Fellow citizens').length,
      tokens: [11, 12, 13],
      text: tokenizer.decode([11, 12, 13]),
      stopReason: 'max-new-tokens',
      prefill: { tokens: tokenizer.encode('Fellow citizens').length },
      decode: { tokens: 2 },
    });
    for (const k of ['seconds', 'tokensPerSecond']) expect(typeof s.prefill[k]).toBe('number');
  });

  test('stops at max_position_embeddings (128)', async () => {
    engine.script = Array.from({ length: 200 }, () => 9);
    const prompt = 'word '.repeat(60).trim();
    const n = tokenizer.encode(prompt).length;
    expect(n).toBeLessThan(128);
    const r = await runCli('generate', TINY, '--prompt', prompt, '--max-new-tokens', '500', '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.stopReason).toBe('max-positions');
    expect(s.tokens).toHaveLength(128 - n);
    expect(engine.opened).toEqual([{ device: 'auto', maxSeq: 128, batch: 1 }]);
  });

  test('a prompt of max_position_embeddings tokens or more: both numbers, engine not opened', async () => {
    const prompt = 'word '.repeat(200).trim();
    const n = tokenizer.encode(prompt).length;
    const r = await runCli('generate', TINY, '--prompt', prompt);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^bwq: .*tiny-llama/config\\.json: the prompt has ${n} tokens, not fewer than the model's max_position_embeddings 128`));
    expect(r.stdout).toBe('');
    expect(engine.opened).toEqual([]);
  });

  // A model directory that does not exist: each error must come before the model is read.
  const errors: [string, string[], RegExp][] = [
    ['no --prompt', [], /^bwq: --prompt is required and must not be empty$/],
    ['empty --prompt', ['--prompt', ''], /^bwq: --prompt is required and must not be empty$/],
    ['--max-new-tokens 0', ['--prompt', 'x', '--max-new-tokens', '0'], /^bwq: --max-new-tokens must be at least 1, got 0$/],
    ['negative --max-new-tokens', ['--prompt', 'x', '--max-new-tokens', '-3'], /^bwq: --max-new-tokens must be at least 1, got -3$/],
    ['fractional --max-new-tokens', ['--prompt', 'x', '--max-new-tokens', '2.5'], /^bwq: --max-new-tokens must be an integer, got "2\.5"$/],
    ['negative --temperature', ['--prompt', 'x', '--temperature', '-0.5'], /^bwq: --temperature must be 0 \(greedy\) or positive, got -0\.5$/],
    ['junk --temperature', ['--prompt', 'x', '--temperature', 'hot'], /^bwq: --temperature must be a number, got "hot"$/],
    ['--top-p 0', ['--prompt', 'x', '--top-p', '0'], /^bwq: --top-p must be in \(0, 1\], got 0$/],
    ['--top-p above 1', ['--prompt', 'x', '--top-p', '1.5'], /^bwq: --top-p must be in \(0, 1\], got 1\.5$/],
    ['junk --top-p', ['--prompt', 'x', '--top-p', '.9x'], /^bwq: --top-p must be a number, got "\.9x"$/],
    ['bad --seed', ['--prompt', 'x', '--seed', 'abc'], /^bwq: --seed must be an integer, got "abc"$/],
    ['--seed above 2^32 - 1', ['--prompt', 'x', '--seed', '4294967296'], /^bwq: --seed must be at most 4294967295, got 4294967296$/],
    ['bad --device', ['--prompt', 'x', '--device', 'gpu'], /^bwq: --device must be one of auto, cuda, cpu, got "gpu"$/],
  ];
  test.each(errors)('%s', async (_name, args, message) => {
    const r = await runCli('generate', join(tmp, 'no-such-model'), ...args);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(message);
    expect(r.stdout).toBe('');
    expect(engine.opened).toEqual([]);
  });

  test('a missing model directory is a one-line error', async () => {
    const r = await runCli('generate', join(tmp, 'nowhere'), '--prompt', 'x');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^bwq: .*nowhere: model directory not found\n$/);
  });
});
