import { describe, expect, it } from 'vitest';
import { gemm, identity, orthogonalityError, qr, randomizedSvd, Rng, svd, procrustes, procrustesAlign } from '../../src/linalg/index.js';
import { transposeF32 } from '../../src/linalg/dense.js';
import { maxAbsDiff } from '../helpers/reference-math.js';

function randomMatrix(rng: Rng, m: number, n: number): Float64Array {
  const a = new Float64Array(m * n);
  for (let i = 0; i < a.length; i++) a[i] = rng.normal();
  return a;
}


describe('gemm', () => {
  it('matches the naive triple loop in all transpose modes', () => {
    const rng = new Rng(1);
    const m = 5, k = 7, n = 3;
    const a = randomMatrix(rng, m, k);
    const b = randomMatrix(rng, k, n);
    const naive = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) naive[i * n + j] += a[i * k + p]! * b[p * n + j]!;
    expect(maxAbsDiff(gemm(a, b, m, k, n), naive)).toBeLessThan(1e-12);
    const bt = new Float64Array(n * k);
    for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) bt[j * k + p] = b[p * n + j]!;
    expect(maxAbsDiff(gemm(a, bt, m, k, n, { transposeB: true }), naive)).toBeLessThan(1e-12);
    const at = new Float64Array(k * m);
    for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) at[p * m + i] = a[i * k + p]!;
    expect(maxAbsDiff(gemm(at, b, m, k, n, { transposeA: true }), naive)).toBeLessThan(1e-12);
    expect(maxAbsDiff(gemm(at, bt, m, k, n, { transposeA: true, transposeB: true }), naive)).toBeLessThan(1e-12);
  });
});

describe('transposeF32', () => {
  it('moves every element [r, c] to [c, r] for shapes that are not multiples of its tiles', () => {
    for (const [rows, cols] of [[1, 1], [37, 53], [64, 33], [5, 100]] as const) {
      const x = Float32Array.from({ length: rows * cols }, (_, i) => i + 0.5);
      const t = transposeF32(x, rows, cols);
      expect(t.length).toBe(rows * cols);
      let wrong = 0;
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (t[c * rows + r] !== x[r * cols + c]) wrong++;
      expect(wrong).toBe(0);
    }
  });
});

describe('qr', () => {
  it('gives orthonormal Q, upper-triangular R with non-negative diagonal, and A = QR', () => {
    const rng = new Rng(2);
    const m = 9, n = 4;
    const a = randomMatrix(rng, m, n);
    const { q, r } = qr(a, m, n);
    expect(maxAbsDiff(gemm(q, r, m, n, n), a)).toBeLessThan(1e-12);
    const qtq = gemm(q, q, n, m, n, { transposeA: true });
    expect(maxAbsDiff(qtq, identity(n))).toBeLessThan(1e-12);
    for (let i = 0; i < n; i++) {
      expect(r[i * n + i]).toBeGreaterThanOrEqual(0);
      for (let j = 0; j < i; j++) expect(r[i * n + j]).toBe(0);
    }
  });
});

describe('svd', () => {
  it('reconstructs tall and wide matrices with orthonormal factors', () => {
    const rng = new Rng(3);
    for (const [m, n] of [[12, 5], [5, 12], [8, 8]] as const) {
      const a = randomMatrix(rng, m, n);
      const { u, s, v, p } = svd(a, m, n);
      const us = new Float64Array(m * p);
      for (let i = 0; i < m; i++) for (let k = 0; k < p; k++) us[i * p + k] = u[i * p + k]! * s[k]!;
      expect(maxAbsDiff(gemm(us, v, m, p, n, { transposeB: true }), a)).toBeLessThan(1e-11);
      expect(maxAbsDiff(gemm(u, u, p, m, p, { transposeA: true }), identity(p))).toBeLessThan(1e-11);
      expect(maxAbsDiff(gemm(v, v, p, n, p, { transposeA: true }), identity(p))).toBeLessThan(1e-11);
      for (let k = 1; k < p; k++) expect(s[k]!).toBeLessThanOrEqual(s[k - 1]!);
    }
  });

  it('finds the exact singular values of a matrix built from known factors', () => {
    // A = Q1 diag(5, 3, 1, 0) Q2ᵀ with orthogonal Q1, Q2 (6×4 and 4×4)
    const rng = new Rng(4);
    const q1 = qr(randomMatrix(rng, 6, 4), 6, 4).q;
    const q2 = qr(randomMatrix(rng, 4, 4), 4, 4).q;
    const sigma = [5, 3, 1, 0];
    const qs = new Float64Array(24);
    for (let i = 0; i < 6; i++) for (let k = 0; k < 4; k++) qs[i * 4 + k] = q1[i * 4 + k]! * sigma[k]!;
    const a = gemm(qs, q2, 6, 4, 4, { transposeB: true });
    const { s, u } = svd(a, 6, 4);
    expect(maxAbsDiff(s, sigma)).toBeLessThan(1e-12);
    expect(orthogonalityError(gemm(u, u, 4, 6, 4, { transposeA: true }), 4)).toBeLessThan(1e-9);
  });
});

describe('procrustes', () => {
  it('recovers a planted rotation exactly', () => {
    const rng = new Rng(5);
    const n = 6;
    const r = qr(randomMatrix(rng, n, n), n, n).q;
    const a = randomMatrix(rng, 40, n);
    const b = gemm(a, r, 40, n, n);
    const found = procrustesAlign(a, b, 40, n);
    expect(maxAbsDiff(found, r)).toBeLessThan(1e-10);
    expect(orthogonalityError(found, n)).toBeLessThan(1e-12);
  });

  it('maximises tr(RᵀM): no random orthogonal matrix does better', () => {
    const rng = new Rng(6);
    const n = 5;
    const mat = randomMatrix(rng, n, n);
    const best = procrustes(mat, n);
    const trace = (r: Float64Array): number => { let t = 0; for (let i = 0; i < n * n; i++) t += r[i]! * mat[i]!; return t; };
    const top = trace(best);
    const nuclear = svd(mat, n, n).s.reduce((x, y) => x + y, 0);
    expect(Math.abs(top - nuclear)).toBeLessThan(1e-10); // max tr(RᵀM) = ‖M‖_*
    for (let t = 0; t < 50; t++) expect(trace(qr(randomMatrix(rng, n, n), n, n).q)).toBeLessThanOrEqual(top + 1e-12);
  });
});

describe('randomizedSvd', () => {
  it('recovers the leading singular triplets of a low-rank-plus-noise matrix', async () => {
    const rng = new Rng(7);
    const m = 120, n = 80, rank = 4;
    const left = qr(randomMatrix(rng, m, rank), m, rank).q;
    const right = qr(randomMatrix(rng, n, rank), n, rank).q;
    const sig = [50, 30, 20, 10];
    const a = new Float64Array(m * n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let v = 1e-3 * rng.normal();
        for (let k = 0; k < rank; k++) v += left[i * rank + k]! * sig[k]! * right[j * rank + k]!;
        a[i * n + j] = v;
      }
    const exact = svd(a, m, n).s;
    const t = await randomizedSvd(a, m, n, rank, { seed: 1 });
    // the products are float32 (src/linalg/matmul.ts): the leading singular values agree to float32 rounding
    for (let k = 0; k < rank; k++) expect(Math.abs(t.s[k]! - exact[k]!)).toBeLessThan(1e-6 * exact[0]!);
    expect(orthogonalityError(gemm(t.u, t.u, rank, m, rank, { transposeA: true }), rank)).toBeLessThan(1e-10);
  });
});

describe('Rng', () => {
  it('is deterministic per seed and roughly uniform/normal', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xs = Array.from({ length: 5 }, () => a.nextUint32());
    expect(Array.from({ length: 5 }, () => b.nextUint32())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c.nextUint32())).not.toEqual(xs);
    const r = new Rng(9);
    let sum = 0, sq = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) { const z = r.normal(); sum += z; sq += z * z; }
    expect(Math.abs(sum / n)).toBeLessThan(0.03);
    expect(Math.abs(sq / n - 1)).toBeLessThan(0.05);
    const s = new Rng(1).sample(100, 10);
    expect(new Set(s).size).toBe(10);
  });
});
