import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runQuantizeBench } from '../../src/bench/quantize.js';
import { parseQuantizeOptions } from '../../src/cli/commands/quantize.js';
import { PACKAGE_ROOT } from '../../src/package-paths.js';
import type { Progress } from '../../src/progress.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const temp = tempDirs();
const quiet: Progress = { start: () => {}, update: () => {}, succeed: () => {}, fail: () => {}, info: () => {} };

/** The Llama-2-7B benchmark config, shrunk so a block quantizes in seconds on the CPU. */
function smallConfig(overrides: Record<string, unknown> = {}): string {
  const raw = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'bench', 'configs', 'llama-2-7b.json'), 'utf8')) as Record<string, unknown>;
  const path = join(temp(), 'small-llama.json');
  writeFileSync(path, JSON.stringify({ ...raw, hidden_size: 128, intermediate_size: 344, num_attention_heads: 4,
    num_key_value_heads: 2, num_hidden_layers: 6, vocab_size: 4096, ...overrides }));
  return path;
}

/** The run as `bwq quantize --method M --device cpu [--nsamples N --seqlen T]` parses it. */
const run = (method: string, extra: { nsamples?: string; seqlen?: string } = {}) =>
  parseQuantizeOptions(undefined, { output: 'unused', method, device: 'cpu', ...extra });


describe('bwq bench --quantize', () => {
  it('times the first blocks of a random checkpoint and projects the whole model from them', async () => {
    const root = temp(); // its own temporary root: other test files' benches come and go in the system's
    const r = await runQuantizeBench(smallConfig(), { quantize: run('bwla', { nsamples: '2', seqlen: '32' }), layers: 2, progress: quiet, tempRoot: root });
    expect(r.config).toBe('small-llama');
    expect([r.nsamples, r.seqlen, r.layers, r.configLayers]).toEqual([2, 32, 2, 6]);
    expect(r.device).toMatch(/^cpu/);
    expect(r.blockSeconds).toHaveLength(2);
    for (const s of r.blockSeconds) expect(s).toBeGreaterThan(0);
    // bf16 weights of 2 blocks + embeddings + lm_head (untied in the Llama-2 config), f32 norms
    const h = 128, i = 344, kv = 2 * 32;
    const block = 2 * (h * h * 2 + h * kv * 2 + 3 * h * i) + 4 * 2 * h;
    expect(r.checkpointBytes).toBe(2 * block + 2 * 2 * 4096 * h + 4 * h);
    expect(r.meanBlockSeconds).toBeCloseTo((r.blockSeconds[0]! + r.blockSeconds[1]!) / 2, 12);
    expect(r.otherSeconds).toBeCloseTo(r.totalSeconds - r.blockSeconds[0]! - r.blockSeconds[1]!, 12);
    // the write-out scales with the model's bytes: 6 blocks against 2
    const fullBytes = 6 * block + 2 * 2 * 4096 * h + 4 * h;
    expect(r.writeSeconds).toBeGreaterThan(0);
    expect(r.writeSeconds).toBeLessThan(r.otherSeconds);
    expect(r.projectedWriteSeconds).toBeCloseTo(r.writeSeconds * fullBytes / r.checkpointBytes, 12);
    expect(r.projectedSeconds).toBeCloseTo(r.otherSeconds - r.writeSeconds + r.projectedWriteSeconds + 6 * r.meanBlockSeconds, 12);
    expect(r.peakRssBytes).toBeGreaterThan(0);
    // the random checkpoint and its output are gone
    expect(readdirSync(root)).toEqual([]);
  }, 120_000);

  it('refuses more layers than the config has, and a vocabulary smaller than the bundled tokenizer\'s', async () => {
    await expect(runQuantizeBench(smallConfig(), { quantize: run('rtn'), layers: 7, progress: quiet }))
      .rejects.toThrow('--layers 7 exceeds the config\'s num_hidden_layers 6');
    await expect(runQuantizeBench(smallConfig({ vocab_size: 1000 }), { quantize: run('rtn'), layers: 1, progress: quiet }))
      .rejects.toThrow('vocab_size >= 4096');
  });
});
