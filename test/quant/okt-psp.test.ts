import { describe, expect, it } from 'vitest';
import { learnOkt, kroneckerProduct, randomOrthogonal } from '../../src/quant/okt.js';
import { rotateRows } from '../../src/quant/kronecker.js';
import { binarizationError } from '../../src/quant/binarize.js';
import { psp, reconstructWeight } from '../../src/quant/psp.js';
import { gemm, orthogonalityError, Rng } from '../../src/linalg/index.js';

/** Gaussian-like "unimodal" weights with a few heavy columns (like real LLM weights). */
function llmLikeWeight(rng: Rng, rows: number, cols: number): Float32Array {
  const w = new Float32Array(rows * cols);
  const colScale = Float64Array.from({ length: cols }, () => Math.exp(0.5 * rng.normal()));
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = 0.02 * rng.normal() * colScale[c]!;
  return w;
}

describe('OKT (orthogonal Kronecker transformation)', () => {
  const rng = new Rng(21);
  const cols = 96; // a = 8, b = 12
  const w1 = llmLikeWeight(rng, 64, cols);
  const w2 = llmLikeWeight(rng, 32, cols);

  for (const init of ['identity', 'random'] as const) {
    it(`(${init} init) factors are orthogonal, the objective is monotone, and bimodality improves`, async () => {
      const res = await learnOkt([{ data: w1, rows: 64 }, { data: w2, rows: 32 }], cols, { iterations: 15, init, seed: 3 });
      expect(res.a).toBe(8);
      expect(res.b).toBe(12);
      expect(orthogonalityError(res.r1, res.a)).toBeLessThan(1e-5);
      expect(orthogonalityError(res.r2, res.b)).toBeLessThan(1e-5);
      for (let i = 1; i < res.history.length; i++) expect(res.history[i]!).toBeLessThanOrEqual(res.history[i - 1]! * (1 + 1e-9));
      // binarization error of the real (unnormalised) weight decreases after rotation
      const before = binarizationError(w1, 64, cols);
      const rotated = rotateRows(Float64Array.from(w1), 64, res.r1, res.a, res.r2, res.b);
      const after = binarizationError(rotated, 64, cols);
      expect(after).toBeLessThan(0.9 * before);
      // rotation preserves the weight norm and the products x Wᵀ = (x R)(W R)ᵀ
      const x = Float64Array.from({ length: 3 * cols }, () => rng.normal());
      const y = gemm(x, w1, 3, cols, 64, { transposeB: true });
      const xr = rotateRows(x, 3, res.r1, res.a, res.r2, res.b);
      const y2 = gemm(xr, rotated, 3, cols, 64, { transposeB: true });
      for (let i = 0; i < y.length; i++) expect(Math.abs(y[i]! - y2[i]!)).toBeLessThan(1e-10);
    });
  }

  it('rotateRows equals multiplication by the dense Kronecker product', () => {
    const r1 = randomOrthogonal(3, rng), r2 = randomOrthogonal(5, rng);
    const x = Float64Array.from({ length: 2 * 15 }, () => rng.normal());
    const dense = gemm(x, kroneckerProduct(r1, 3, r2, 5), 2, 15, 15);
    const fast = rotateRows(x, 2, r1, 3, r2, 5);
    for (let i = 0; i < 30; i++) expect(Math.abs(dense[i]! - fast[i]!)).toBeLessThan(1e-12);
  });

  it('is deterministic for a seed', async () => {
    const a = await learnOkt([{ data: w2, rows: 32 }], cols, { iterations: 3, init: 'random', seed: 9 });
    const b = await learnOkt([{ data: w2, rows: 32 }], cols, { iterations: 3, init: 'random', seed: 9 });
    expect(Array.from(a.r1)).toEqual(Array.from(b.r1));
  });
});

describe('PSP (proximal SVD projection)', () => {
  it('reduces the weight reconstruction error and stays within rank', async () => {
    const rng = new Rng(31);
    const rows = 80, cols = 64;
    // weight with a genuine low-rank component plus noise
    const w = llmLikeWeight(rng, rows, cols);
    const u = Float64Array.from({ length: rows * 2 }, () => rng.normal());
    const v = Float64Array.from({ length: 2 * cols }, () => rng.normal());
    const low = gemm(u, v, rows, 2, cols);
    for (let i = 0; i < w.length; i++) w[i] = w[i]! + 0.01 * low[i]!;
    const res = await psp(w, rows, cols, { rank: 8, iterations: 3, seed: 1 });
    expect(res.rank).toBeGreaterThan(0);
    expect(res.rank).toBeLessThanOrEqual(8);
    expect(res.errorBefore).toBeCloseTo(Math.sqrt(binarizationError(w, rows, cols)), 5);
    expect(res.errorAfter).toBeLessThan(0.8 * res.errorBefore);
    const rec = reconstructWeight(res.signs, res.scales, res.lrA, res.lrB, res.rank, rows, cols);
    let err = 0;
    for (let i = 0; i < w.length; i++) err += (w[i]! - rec[i]!) ** 2;
    expect(Math.sqrt(err)).toBeCloseTo(res.errorAfter, 4);
    // more rank never hurts (same seed)
    const res16 = await psp(w, rows, cols, { rank: 16, iterations: 3, seed: 1 });
    expect(res16.errorAfter).toBeLessThan(res.errorAfter);
  });

  it('rank 0 is plain binarization', async () => {
    const rng = new Rng(32);
    const w = llmLikeWeight(rng, 10, 40);
    const res = await psp(w, 10, 40, { rank: 0 });
    expect(res.rank).toBe(0);
    expect(res.errorAfter).toBe(res.errorBefore);
  });
});

describe('OKT and PSP vs an independent PyTorch implementation (make_quant_reference.py)', () => {
  it('three EM iterations from the identity give the same R1, R2 and objective history', async () => {
    const { loadQuantReference } = await import('./reference-fixture.js');
    const ref = await loadQuantReference();
    const w1 = ref.get('okt_w1')!, w2 = ref.get('okt_w2')!;
    const res = await learnOkt([{ data: w1.data, rows: 10 }, { data: w2.data, rows: 6 }], 24, { iterations: 3, init: 'identity' });
    expect([res.a, res.b]).toEqual([4, 6]);
    const hist = ref.get('okt_history')!.data;
    expect(res.history).toHaveLength(4);
    // bwq's history is relative (ε_w = error / energy of the stacked rms-normalised rows = 16 · 24)
    // the EM's products are float32 (src/linalg/matmul.ts), the reference float64: agreement to float32 rounding
    for (let i = 0; i < 4; i++) expect(Math.abs(res.history[i]! * 16 * 24 - hist[i]!)).toBeLessThan(2e-6 * hist[0]!);
    const r1 = ref.get('okt_r1')!.data, r2 = ref.get('okt_r2')!.data;
    for (let i = 0; i < 16; i++) expect(Math.abs(res.r1[i]! - r1[i]!)).toBeLessThan(1e-5);
    for (let i = 0; i < 36; i++) expect(Math.abs(res.r2[i]! - r2[i]!)).toBeLessThan(1e-5);
  });

  for (const variant of ['psp_fixed', 'psp_weighted'] as const) {
    it(`PSP ${variant === 'psp_fixed' ? '(D = I)' : '(activation weighting D)'}: rank 4, τ = 0.25·σ5 of the initial residual, 2 alternations — same signs, scales, low-rank term, τ and objective per step`, async () => {
      const { loadQuantReference } = await import('./reference-fixture.js');
      const ref = await loadQuantReference();
      const need = (name: string): Float64Array => {
        const t = ref.get(name);
        if (t === undefined) throw new Error(`test/fixtures/quant/quant_reference.safetensors lacks "${name}": regenerate it with test/fixtures/generate/make_quant_reference.py (torch)`);
        return t.data;
      };
      const w = Float32Array.from(need('psp_w')); // psp takes float32 weights: the fixture's float64 values, rounded
      const d = variant === 'psp_weighted' ? need('psp_d') : undefined;
      // 12 rows: the randomized sketch (rank + 1 + 8 ≥ 12 columns) spans the whole range → exact SVD
      const res = await psp(w, 12, 24, { rank: 4, iterations: 2, tauRatio: 0.25, ...(d === undefined ? {} : { columnWeights: d }) });
      expect(Array.from(res.signs)).toEqual(Array.from(need(`${variant}_signs`)));
      const scales = need(`${variant}_scales`);
      for (let i = 0; i < 12; i++) expect(Math.abs(res.scales[i]! - scales[i]!)).toBeLessThan(1e-6);
      const low = need(`${variant}_lowrank`);
      for (let r = 0; r < 12; r++)
        for (let c = 0; c < 24; c++) {
          let v = 0;
          for (let k = 0; k < res.rank; k++) v += res.lrA[r * res.rank + k]! * res.lrB[k * 24 + c]!;
          expect(Math.abs(v - low[r * 24 + c]!)).toBeLessThan(1e-5);
        }
      expect(res.errorAfter).toBeCloseTo(need(`${variant}_error`)[0]!, 5);
      expect(res.tau).toBeCloseTo(need(`${variant}_tau`)[0]!, 6);
      const hist = need(`${variant}_history`);
      expect(res.history).toHaveLength(hist.length);
      for (let i = 0; i < hist.length; i++) expect(Math.abs(res.history[i]! - hist[i]!)).toBeLessThan(1e-6 * hist[0]!);
    });
  }
});
