import { afterAll, expect, test } from 'vitest';
import { ortMatmul, releaseOrtMatmul } from '../../src/onnx/ort-matmul.js';

afterAll(releaseOrtMatmul);

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

test.each([
  [1, 1, 1],
  [3, 5, 7],
  [37, 64, 19],
  [130, 33, 70],
])('ortMatmul %ix%ix%i matches a float64 loop (plain and transposed B)', async (m, k, n) => {
  const rnd = lcg(m * 1000 + k * 10 + n);
  const a = Float32Array.from({ length: m * k }, rnd);
  const b = Float32Array.from({ length: k * n }, rnd);
  const bt = new Float32Array(n * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) bt[j * k + i] = b[i * n + j]!;
  const c = await ortMatmul(a, b, m, k, n);
  const ct = await ortMatmul(a, bt, m, k, n, { transposeB: true });
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
      expect(Math.abs(c[i * n + j]! - s)).toBeLessThan(1e-5 * (1 + k));
      expect(Math.abs(ct[i * n + j]! - s)).toBeLessThan(1e-5 * (1 + k));
    }
  }
});

test('ortMatmul checks sizes and handles empty k', async () => {
  await expect(ortMatmul(new Float32Array(5), new Float32Array(6), 2, 3, 2)).rejects.toThrow(/A has 5/);
  expect(Array.from(await ortMatmul(new Float32Array(0), new Float32Array(0), 2, 0, 3))).toEqual([0, 0, 0, 0, 0, 0]);
});
