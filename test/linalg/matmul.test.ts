import { describe, expect, it } from 'vitest';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { Rng } from '../../src/linalg/random.js';

/** op(A)·op(B) summed in float64 by a plain loop (A [m,k] or [k,m], B [k,n] or [n,k]). */
function reference(a: Float32Array, b: Float32Array, m: number, k: number, n: number, ta: boolean, tb: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += (ta ? a[p * m + i]! : a[i * k + p]!) * (tb ? b[j * k + p]! : b[p * n + j]!);
    c[i * n + j] = s;
  }
  return c;
}

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
      const r = reference(a, b, m, k, n, ta, tb);
      for (let i = 0; i < r.length; i++) expect(c[i]).toBe(Math.fround(r[i]!));
    }
  });
});
