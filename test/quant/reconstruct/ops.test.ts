/**
 * Gradient checks of every reconstruction op against float64 central differences on tiny shapes
 * (L = Σ y ⊙ R with a fixed random R, so ∂L/∂y = R).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { ropeTables } from '../../../src/native/rope.js';
import { rmsNormBackward, rmsNormForward } from '../../../src/quant/reconstruct/rmsnorm.js';
import { headNormBackward, headNormForward } from '../../../src/quant/reconstruct/head-norm.js';
import { ropeBackward, ropeForward } from '../../../src/quant/reconstruct/rope.js';
import { swigluBackward, swigluForward } from '../../../src/quant/reconstruct/swiglu.js';
import { rotationBackward, rotationForward } from '../../../src/quant/reconstruct/rotation.js';
import { BinaryLinear } from '../../../src/quant/reconstruct/binary-linear.js';
import { attentionBackward, attentionForward } from '../../../src/quant/reconstruct/attention.js';
import { gemmNN, gemmNT, gemmTN, jsGemm } from '../../../src/quant/reconstruct/gemm.js';
import { quantForward, sumAbs } from '../../../src/quant/reconstruct/act-quant.js';
import { QuantSite } from '../../../src/quant/reconstruct/quant-site.js';
import { ternaryStages } from '../../../src/quant/reconstruct/schedule.js';
import { dot, numericGrad, pick, randn, relError } from './helpers.js';

const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('reconstruction GEMMs', () => {
  it('nt, nn and tn agree with the naive triple loop', () => {
    const rng = new Rng(1);
    const m = 5, k = 7, n = 3;
    const a = randn(rng, m * k);
    const b = randn(rng, n * k);
    const nt = gemmNT(a, b, m, k, n);
    const bt = randn(rng, k * n);
    const nn = gemmNN(a, bt, m, k, n);
    const at = randn(rng, k * m);
    const tn = gemmTN(at, bt, m, k, n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s1 = 0, s2 = 0, s3 = 0;
        for (let p = 0; p < k; p++) {
          s1 += a[i * k + p]! * b[j * k + p]!;
          s2 += a[i * k + p]! * bt[p * n + j]!;
          s3 += at[p * m + i]! * bt[p * n + j]!;
        }
        expect(nt[i * n + j]).toBeCloseTo(s1, 12);
        expect(nn[i * n + j]).toBeCloseTo(s2, 12);
        expect(tn[i * n + j]).toBeCloseTo(s3, 12);
      }
    }
  });
});

describe('op backward = finite differences (float64)', () => {
  it('RMSNorm', async () => {
    const rng = new Rng(2);
    const rows = 3, cols = 6;
    const x = randn(rng, rows * cols);
    const w = randn(rng, cols);
    const R = randn(rng, rows * cols);
    const loss = (): number => dot(rmsNormForward(x, rows, cols, w, 1e-5).y, R);
    const { inv } = rmsNormForward(x, rows, cols, w, 1e-5);
    const dx = rmsNormBackward(x, R, rows, cols, w, inv);
    const idx = all(rows * cols);
    expect(relError(idx.map((i) => dx[i]!), await numericGrad(x, idx, loss))).toBeLessThan(1e-7);
  });

  it('per-head RMSNorm (Qwen3 q_norm / k_norm): three tokens, two heads', async () => {
    const rng = new Rng(12);
    const tokens = 3, heads = 2, hd = 5;
    const x = randn(rng, tokens * heads * hd);
    const w = randn(rng, hd, 0.3).map((v) => v + 1) as Float64Array;
    const R = randn(rng, x.length);
    const loss = (): number => dot(headNormForward(x, tokens, heads, hd, w, 1e-6).y, R);
    const { y, cache } = headNormForward(x, tokens, heads, hd, w, 1e-6);
    // every (token, head) row is normalized on its own: y_{t,h} = w ⊙ x_{t,h} / rms(x_{t,h})
    for (let r = 0; r < tokens * heads; r++) {
      let ss = 0;
      for (let j = 0; j < hd; j++) ss += x[r * hd + j]! ** 2;
      const rms = Math.sqrt(ss / hd + 1e-6);
      for (let j = 0; j < hd; j++) expect(y[r * hd + j]).toBeCloseTo((w[j]! * x[r * hd + j]!) / rms, 12);
    }
    const dx = headNormBackward(R, tokens, heads, hd, w, cache);
    const idx = all(x.length);
    expect(relError(idx.map((i) => dx[i]!), await numericGrad(x, idx, loss))).toBeLessThan(1e-7);
  });

  it('RoPE (two sequences, two heads)', async () => {
    const rng = new Rng(3);
    const batch = 2, seq = 4, heads = 2, hd = 6;
    const tables = ropeTables(Float32Array.from([1, 0.1, 0.01]), seq);
    const x = randn(rng, batch * seq * heads * hd);
    const R = randn(rng, x.length);
    const loss = (): number => {
      const y = Float64Array.from(x);
      ropeForward(y, batch, seq, heads, hd, tables);
      return dot(y, R);
    };
    const g = Float64Array.from(R);
    ropeBackward(g, batch, seq, heads, hd, tables);
    const idx = all(x.length);
    expect(relError(idx.map((i) => g[i]!), await numericGrad(x, idx, loss))).toBeLessThan(1e-8);
  });

  it('SwiGLU', async () => {
    const rng = new Rng(4);
    const n = 20;
    const gate = randn(rng, n, 2);
    const up = randn(rng, n);
    const R = randn(rng, n);
    const loss = (): number => dot(swigluForward(gate, up), R);
    const { dGate, dUp } = swigluBackward(gate, up, R);
    const idx = all(n);
    expect(relError(idx.map((i) => dGate[i]!), await numericGrad(gate, idx, loss))).toBeLessThan(1e-7);
    expect(relError(idx.map((i) => dUp[i]!), await numericGrad(up, idx, loss))).toBeLessThan(1e-7);
  });

  it('Kronecker rotation (adjoint, any R1, R2)', async () => {
    const rng = new Rng(5);
    const rows = 3, a = 2, b = 3;
    const rot = { r1: randn(rng, a * a), a, r2: randn(rng, b * b), b };
    const x = randn(rng, rows * a * b);
    const R = randn(rng, x.length);
    const loss = async (): Promise<number> => dot(await rotationForward(x, rows, rot), R);
    const g = await rotationBackward(R, rows, rot);
    const idx = all(x.length);
    expect(relError(idx.map((i) => g[i]!), await numericGrad(x, idx, loss))).toBeLessThan(1e-8);
  });

  it('binarized linear: input, scales, low-rank factors; straight-through latent gradient', async () => {
    const rng = new Rng(6);
    const tokens = 4, rows = 5, cols = 7, rank = 2;
    const latent = randn(rng, rows * cols);
    const alpha = randn(rng, rows).map(Math.abs) as Float64Array;
    const lrA = randn(rng, rows * rank, 0.3);
    const lrB = randn(rng, rank * cols, 0.3);
    const bias = randn(rng, rows);
    const lin = new BinaryLinear(rows, cols, latent, alpha, rank, lrA, lrB, bias);
    const x = randn(rng, tokens * cols);
    const R = randn(rng, tokens * rows);
    const loss = async (): Promise<number> => {
      lin.invalidate();
      return dot(await lin.forward(x, tokens, jsGemm), R);
    };
    lin.zeroGrad();
    const dx = await lin.backward(x, R, tokens, jsGemm);
    const check = async (param: Float64Array, grad: ArrayLike<number>): Promise<void> => {
      const idx = all(param.length);
      expect(relError(idx.map((i) => grad[i]!), await numericGrad(param, idx, loss))).toBeLessThan(1e-7);
    };
    await check(x, dx);
    await check(alpha, lin.gAlpha);
    await check(lrA, lin.gA);
    await check(lrB, lin.gB);
    // STE: ∂L/∂Λ_nk = α_n · (Gᵀ X)_nk
    const dw = gemmTN(R, x, rows, tokens, cols);
    for (let n = 0; n < rows; n++) for (let k = 0; k < cols; k++) expect(lin.gLatent[n * cols + k]).toBeCloseTo(alpha[n]! * dw[n * cols + k]!, 12);
  });

  it('causal GQA attention with a sliding window (float operands)', async () => {
    const rng = new Rng(7);
    const batch = 2, seq = 5, nH = 4, nKV = 2, hd = 3;
    const dims = { seq, numHeads: nH, numKvHeads: nKV, headDim: hd, slidingWindow: 3 };
    const q = randn(rng, batch * seq * nH * hd);
    const k = randn(rng, batch * seq * nKV * hd);
    const v = randn(rng, batch * seq * nKV * hd);
    const R = randn(rng, q.length);
    const at = { stage: 0, lambda: 1 };
    const loss = async (): Promise<number> => dot((await attentionForward(q, k, v, batch, dims, undefined, at, jsGemm)).ctx, R);
    const f = await attentionForward(q, k, v, batch, dims, undefined, at, jsGemm);
    const g = await attentionBackward(R, batch, dims, undefined, f.cache, jsGemm);
    for (const [param, grad] of [[q, g.dq], [k, g.dk], [v, g.dv]] as const) {
      const idx = pick(rng, param.length, 24);
      expect(relError(idx.map((i) => grad[i]!), await numericGrad(param, idx, loss))).toBeLessThan(1e-6);
    }
  });
});

describe('attention operand sites', () => {
  it('take the alignment factors of the whole minibatch (every head), not of the first head', async () => {
    const rng = new Rng(12);
    const batch = 2, seq = 6, nH = 4, nKV = 2, hd = 4;
    const dims = { seq, numHeads: nH, numKvHeads: nKV, headDim: hd, slidingWindow: undefined };
    // heads of very different magnitudes, so a factor taken on one head differs from the whole minibatch's
    const scaled = (n: number, heads: number): Float64Array => randn(rng, n).map((x, i) => x * (1 + 3 * (Math.floor(i / hd) % heads)));
    const q = scaled(batch * seq * nH * hd, nH);
    const k = scaled(batch * seq * nKV * hd, nKV);
    const v = randn(rng, batch * seq * nKV * hd);
    const site = (name: string) => new QuantSite(name, ternaryStages([9]), 0.7, true);
    const sites = { query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: 'unmasked' as const };
    const at = { stage: 1, lambda: 1 }; // levels 9, anchored at ternary
    const f = await attentionForward(q, k, v, batch, dims, sites, at, jsGemm);
    // q as rows of head_dim (token-major: every (token, head) row once) is the set of rows the query site saw
    const factor = (x: Float64Array, rows: number, cols: number, causal?: Parameters<typeof quantForward>[5]): number =>
      sumAbs(quantForward({ kind: 'ternary' }, 0.7, x, rows, cols, causal).out) / sumAbs(quantForward({ kind: 'levels', levels: 9 }, 0.7, x, rows, cols, causal).out);
    expect(sites.query.p[1]).toBeCloseTo(factor(q, batch * seq * nH, hd), 12);
    expect(sites.key.p[1]).toBeCloseTo(factor(k, batch * seq * nKV, hd), 12);
    expect(sites.query.p[1]).not.toBeCloseTo(factor(q.subarray(0, seq * hd), seq, hd), 3); // (not the first rows only)
    const probs = new Float64Array(f.cache.softmax.flat().flatMap((p) => Array.from(p)));
    expect(sites.probs.p[1]).toBeCloseTo(factor(probs, batch * nH * seq, seq, { period: seq, slidingWindow: undefined, unmasked: true }), 12);
  });
});

describe('Adam', () => {
  it('follows θ ← θ − lr·m̂/(√v̂ + ε) with bias-corrected float32 moments over several steps', async () => {
    const { Adam } = await import('../../../src/quant/reconstruct/adam.js');
    const rng = new Rng(21);
    const n = 7;
    const theta = randn(rng, n);
    const ref = Float64Array.from(theta);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const opt = new Adam(n, { lr: 0.05, eps: 1e-8 });
    for (let t = 1; t <= 5; t++) {
      const g = randn(rng, n);
      const scale = 0.5 + 0.1 * t;
      opt.step(theta, g, scale);
      for (let i = 0; i < n; i++) {
        m[i] = Math.fround(0.9 * m[i]! + 0.1 * g[i]!);
        v[i] = Math.fround(0.999 * v[i]! + 0.001 * g[i]! * g[i]!);
        ref[i] = ref[i]! - (0.05 * scale * (m[i]! / (1 - 0.9 ** t))) / (Math.sqrt(v[i]! / (1 - 0.999 ** t)) + 1e-8);
      }
    }
    // the moments are stored in float32: the two roundings differ by ~1e-9
    for (let i = 0; i < n; i++) expect(theta[i]).toBeCloseTo(ref[i]!, 8);
  });
});
