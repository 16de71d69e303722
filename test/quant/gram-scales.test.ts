import { describe, expect, it } from 'vitest';
import { jsMatmul, Rng, type Numerics, type RotateRows } from '../../src/linalg/index.js';
import { rotateRows } from '../../src/quant/kronecker.js';
import { kroneckerProduct } from '../../src/quant/okt.js';
import { quantizeGroup, type GroupSettings, type InputGram } from '../../src/quant/layer-quant.js';

/** Calibration rows with outlier channels [tokens, cols], and a weight [rows, cols]. */
function rowsOf(rng: Rng, tokens: number, cols: number): Float32Array {
  const x = new Float32Array(tokens * cols);
  for (let t = 0; t < tokens; t++) for (let c = 0; c < cols; c++) x[t * cols + c] = rng.normal() * (c % 13 === 0 ? 6 : 1) * (1 + (t % 5));
  return x;
}

/** Xᵀ X in float64. */
function gram64(x: Float32Array, tokens: number, cols: number): Float64Array {
  const h = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] = h[i * cols + j]! + x[t * cols + i]! * x[t * cols + j]!;
  return h;
}

/** Rᵀ H R for a dense R [n, n] (float64). */
function congruence(h: Float64Array, r: Float64Array, n: number): Float64Array {
  const hr = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) { const v = h[i * n + k]!; for (let j = 0; j < n; j++) hr[i * n + j] = hr[i * n + j]! + v * r[k * n + j]!; }
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) for (let i = 0; i < n; i++) { const v = r[k * n + i]!; for (let j = 0; j < n; j++) out[i * n + j] = out[i * n + j]! + v * hr[k * n + j]!; }
  return out;
}

/** The output-optimal scales α_n = bₙᵀ H tₙ / bₙᵀ H bₙ (t = the target rows), float64. */
function optimalScales(signs: Int8Array, target: Float64Array, h: Float64Array, rows: number, cols: number): Float64Array {
  const alpha = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let num = 0;
    let den = 0;
    for (let i = 0; i < cols; i++) {
      let bh = 0;
      for (let j = 0; j < cols; j++) bh += signs[r * cols + j]! * h[j * cols + i]!;
      num += bh * target[r * cols + i]!;
      den += bh * signs[r * cols + i]!;
    }
    alpha[r] = num / den;
  }
  return alpha;
}

function maxRel(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < y.length; i++) { d = Math.max(d, Math.abs(x[i]! - y[i]!)); m = Math.max(m, Math.abs(y[i]!)); }
  return d / m;
}

describe('quantizeGroup with the Gram matrix over every calibration token', () => {
  const rng = new Rng(19);
  const cols = 24, rows = 20, all = 600, sampled = 48;
  const xAll = rowsOf(rng, all, cols);
  const x = xAll.slice(0, sampled * cols); // the sampled rows are some of the tokens
  const w = Float32Array.from({ length: rows * cols }, () => 0.1 * rng.normal());
  const members = [{ role: 'down_proj' as const, weight: w, rows }];
  const h64 = gram64(xAll, all, cols);
  const gram: InputGram = { data: Float32Array.from(h64), tokens: all };
  const numerics: Numerics = { matmul: jsMatmul };

  it('bwta: the output-optimal scales are those of H = XᵀX over all tokens, not of the sampled rows', async () => {
    const s: GroupSettings = { method: 'bwta', aBits: 'ternary', rank: 0, oktIterations: 0, pspIterations: 0, pspTauRatio: 0.25, seed: 1, oktInit: 'identity', weightedPsp: false, dataAwareScale: true };
    const withGram = await quantizeGroup('mlp_out', members, cols, x, sampled, s, 5, numerics, gram);
    const without = await quantizeGroup('mlp_out', members, cols, x, sampled, s, 5, numerics);
    const q = withGram.linears[0]!;
    const expected = optimalScales(q.signs, Float64Array.from(w), h64, rows, cols);
    expect(maxRel(q.scales, expected)).toBeLessThan(1e-5);
    const fromSample = optimalScales(q.signs, Float64Array.from(w), gram64(x, sampled, cols), rows, cols);
    expect(maxRel(without.linears[0]!.scales, fromSample)).toBeLessThan(1e-5);
    expect(maxRel(q.scales, fromSample)).toBeGreaterThan(1e-3);
  });

  it('bwla: scales from H\' = Rᵀ H R (both sides rotated), the injected rotation used for W R, X R and H\'', async () => {
    const s: GroupSettings = { method: 'bwla', aBits: 6, rank: 2, oktIterations: 3, pspIterations: 2, pspTauRatio: 0.25, seed: 2, oktInit: 'random', weightedPsp: true, dataAwareScale: true };
    let calls = 0;
    const counted: RotateRows = async (v, n, r1, a, r2, b) => { calls++; return rotateRows(v, n, r1, a, r2, b); };
    const g = await quantizeGroup('mlp_out', members, cols, x, sampled, s, 9, { matmul: jsMatmul, rotateRows: counted }, gram);
    expect(calls).toBe(4); // X R, H R, (Rᵀ H) R, W R
    const plain = await quantizeGroup('mlp_out', members, cols, x, sampled, s, 9, numerics, gram);
    expect(Array.from(plain.linears[0]!.signs)).toEqual(Array.from(g.linears[0]!.signs));
    const rot = g.rotation!;
    const r = kroneckerProduct(rot.r1, rot.a, rot.r2, rot.b);
    const q = g.linears[0]!;
    // target W R − lrA lrB in float64
    const target = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      let v = 0;
      for (let k = 0; k < cols; k++) v += w[i * cols + k]! * r[k * cols + j]!;
      for (let k = 0; k < q.rank; k++) v -= q.lrA[i * q.rank + k]! * q.lrB[k * cols + j]!;
      target[i * cols + j] = v;
    }
    const expected = optimalScales(q.signs, target, congruence(h64, r, cols), rows, cols);
    expect(maxRel(q.scales, expected)).toBeLessThan(1e-4);
    // with H of the sampled rows the scales differ (the statistic reaches the result)
    const sampledOnly = await quantizeGroup('mlp_out', members, cols, x, sampled, s, 9, numerics);
    expect(maxRel(sampledOnly.linears[0]!.scales, q.scales)).toBeGreaterThan(1e-3);
  });

  it('refuses a Gram matrix of the wrong size', async () => {
    const s: GroupSettings = { method: 'bwta', aBits: 'ternary', rank: 0, oktIterations: 0, pspIterations: 0, pspTauRatio: 0.25, seed: 1, oktInit: 'identity', weightedPsp: false, dataAwareScale: true };
    await expect(quantizeGroup('mlp_out', members, cols, x, sampled, s, 5, numerics, { data: new Float32Array(5), tokens: 1 })).rejects.toThrow(/Gram matrix of 5 values/);
  });
});
