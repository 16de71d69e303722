import { describe, expect, it } from 'vitest';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { Rng } from '../../src/linalg/random.js';
import { float64Product } from '../helpers/reference-math.js';

describe('jsMatmul (the numerics\' JS GEMM)', () => {
  it('takes and returns float32, the float64 sums rounded once, for every transposition case', async () => {
    const rng = new Rng(3);
    const [m, k, n] = [13, 29, 7];
    const a = Float32Array.from({ length: m * k }, () => rng.normal());
    const b = Float32Array.from({ length: k * n }, () => rng.normal());
    for (const ta of [false, true]) for (const tb of [false, true]) {
      const c = await jsMatmul(a, b, m, k, n, { transposeA: ta, transposeB: tb });
      expect(c).toBeInstanceOf(Float32Array);
      expect(c.length).toBe(m * n);
      const r = float64Product(a, b, m, k, n, ta, tb);
      for (let i = 0; i < r.length; i++) expect(c[i]).toBe(Math.fround(r[i]!));
    }
  });
});
