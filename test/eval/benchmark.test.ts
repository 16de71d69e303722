import { expect, test } from 'vitest';
import { benchmarkEval } from '../../src/eval/benchmark.js';

test('benchmarkEval runs the bundled model and reports throughput (and the reference ppl at 256 × 8)', async () => {
  const r = await benchmarkEval({ seqlen: 256, windows: 8, threads: 1 });
  expect(r.windows).toBe(8);
  expect(r.tokens).toBe(2040);
  expect(Math.abs(r.ppl / 66.6071819580773 - 1)).toBeLessThan(1e-3); // reference.json, transformers
  expect(r.tokensPerSecond).toBeGreaterThan(0);
  expect(r.tokensPerSecond).toBeCloseTo((8 * 256) / r.seconds, 6);
});
