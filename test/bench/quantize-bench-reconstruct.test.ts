/**
 * `bwq bench --quantize` times the block-wise reconstruction per block (--reconstruct / --no-reconstruct /
 * --rec-iterations / --rec-batch, parsed as quantize parses them).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatQuantizeBench, runQuantizeBench } from '../../src/bench/quantize.js';
import { quantizeBenchOptions } from '../../src/cli/commands/bench.js';
import { PACKAGE_ROOT } from '../../src/package-paths.js';
import type { Progress } from '../../src/progress.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const temp = tempDirs();
const quiet: Progress = { start: () => {}, update: () => {}, succeed: () => {}, fail: () => {}, info: () => {} };

/** The Qwen3-8B benchmark config (q/k norms), shrunk so a block reconstructs in seconds on the CPU. */
function smallQwen3(): string {
  const raw = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'bench', 'configs', 'qwen3-8b.json'), 'utf8')) as Record<string, unknown>;
  const path = join(temp(), 'small-qwen3.json');
  writeFileSync(path, JSON.stringify({ ...raw, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4,
    num_key_value_heads: 2, head_dim: 16, num_hidden_layers: 4, vocab_size: 4096 }));
  return path;
}

describe('bwq bench --quantize with block-wise reconstruction', () => {
  it('parses the reconstruction flags as quantize does', () => {
    const base = { quantize: true, device: 'cpu' };
    expect(quantizeBenchOptions({ ...base, method: 'bwta', recIterations: '7', recBatch: '2' }).quantize.reconstruct)
      .toMatchObject({ iterations: 7, batch: 2 });
    expect(quantizeBenchOptions({ ...base, method: 'bwta', reconstruct: false }).quantize.reconstruct).toBeUndefined();
    expect(quantizeBenchOptions({ ...base, method: 'bwla' }).quantize.reconstruct).toBeUndefined();
    expect(quantizeBenchOptions({ ...base, method: 'bwla', reconstruct: true }).quantize.reconstruct).toMatchObject({ iterations: 200 });
  });

  it('reports each block\'s reconstruction time and the time per step (Qwen3 shape: q/k norms)', async () => {
    const o = quantizeBenchOptions({ quantize: true, device: 'cpu', method: 'bwta', nsamples: '2', seqlen: '32', recIterations: '4' });
    const r = await runQuantizeBench(smallQwen3(), { ...o, layers: 2, progress: quiet });
    const rec = r.reconstruction!;
    expect([rec.iterations, rec.batch]).toEqual([4, 1]);
    expect(rec.blockSeconds).toHaveLength(2);
    rec.blockSeconds.forEach((s, i) => {
      expect(s).toBeGreaterThan(0);
      expect(s).toBeLessThan(r.blockSeconds[i]!);
    });
    expect(rec.meanBlockSeconds).toBeCloseTo((rec.blockSeconds[0]! + rec.blockSeconds[1]!) / 2, 12);
    expect(rec.secondsPerStep).toBeCloseTo(rec.meanBlockSeconds / 4, 12);
    expect(formatQuantizeBench(r)).toMatch(/\nof which reconstruction \(4 steps of 1 x 32 tokens\): [\d.]+, [\d.]+ s \(mean [\d.]+ s, \d+ ms per step\)\n/);
    const plain = await runQuantizeBench(smallQwen3(), {
      ...quantizeBenchOptions({ quantize: true, device: 'cpu', method: 'bwta', nsamples: '2', seqlen: '32', reconstruct: false }),
      layers: 1, progress: quiet,
    });
    expect(plain.reconstruction).toBeUndefined();
    expect(formatQuantizeBench(plain)).not.toMatch(/reconstruction/);
  }, 300_000);

  it('refuses reconstruction flags without the reconstruction in one line', async () => {
    const r = await runCli('bench', '--quantize', '--method', 'bwla', '--rec-iterations', '5', '--device', 'cpu');
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--rec-iterations needs the reconstruction \(--reconstruct\)/);
  });
});
