/**
 * Orthogonal-Kronecker Transformation (BWLA): learn R = R1 ⊗ R2 (R1 [a, a], R2 [b, b], K = a·b)
 * so that the rotated weight rows W'_n = w_n R are close to two symmetric modes ±α_n, i.e.
 *
 *   min_{R1, R2 orthogonal}  Σ_n ‖ w_n R − α_n · sign(w_n R) ‖²,   α_n = mean_k |(w_n R)_k|
 *
 * by EM / block-coordinate descent (docs/ALGORITHMS.md §OKT):
 *   E-step:  T_n = α_n sign(R1ᵀ X_n R2)                    (X_n = w_n reshaped row-major to (a, b))
 *   M-step:  R1 = Procrustes(Σ_n X_n R2 T_nᵀ)  (R2 fixed), then a fresh E-step, then
 *            R2 = Procrustes(Σ_n X_nᵀ R1 T_n)  (R1 fixed).
 * Each step cannot increase the objective (T_n is its minimiser for fixed R; Procrustes is the
 * exact minimiser of ‖R1ᵀ X R2 − T‖ for one factor given the other), so the history is monotone.
 * Several weight matrices that share an input (q/k/v; gate/up) are stacked; each matrix is scaled by
 * 1/rms(W) so that one matrix does not dominate the sum.
 */
import { identity, jsMatmul, qr, Rng, procrustes, type Matmul } from '../linalg/index.js';
import { kroneckerFactors } from './kronecker.js';

export interface OktInput {
  data: Float32Array | Float64Array;
  rows: number;
}

export interface OktOptions {
  iterations?: number;
  init?: 'identity' | 'random';
  seed?: number;
  matmul?: Matmul;
}

export interface OktResult {
  r1: Float64Array;
  r2: Float64Array;
  a: number;
  b: number;
  /** objective (scaled binarization error) before the first and after every iteration */
  history: number[];
}

/** Haar-random orthogonal n×n matrix (QR of a Gaussian matrix, R diagonal made positive). */
export function randomOrthogonal(n: number, rng: Rng): Float64Array {
  const g = new Float64Array(n * n);
  for (let i = 0; i < g.length; i++) g[i] = rng.normal();
  return qr(g, n, n).q;
}

export async function learnOkt(weights: readonly OktInput[], cols: number, options: OktOptions = {}): Promise<OktResult> {
  const gemm = options.matmul ?? jsMatmul;
  const { a, b } = kroneckerFactors(cols);
  const iterations = options.iterations ?? 20;
  const rng = new Rng(options.seed ?? 0);
  let r1 = options.init === 'random' ? randomOrthogonal(a, rng) : identity(a);
  let r2 = options.init === 'random' ? randomOrthogonal(b, rng) : identity(b);
  // stacked, rms-normalised rows
  let totalRows = 0;
  for (const w of weights) totalRows += w.rows;
  const x = new Float64Array(totalRows * cols);
  let off = 0;
  for (const w of weights) {
    let ss = 0;
    const n = w.rows * cols;
    for (let i = 0; i < n; i++) ss += w.data[i]! * w.data[i]!;
    const scale = ss > 0 ? 1 / Math.sqrt(ss / n) : 1;
    for (let i = 0; i < n; i++) x[off + i] = w.data[i]! * scale;
    off += n;
  }
  const history: number[] = [];
  const n = totalRows;
  const xt = transposeBlocks(x, n, a, b); // [N, b, a]
  const t = new Float64Array(n * cols);

  /** T = α_n sign(Y) row-block-wise (α_n = mean |Y_n|); returns Σ ‖Y − T‖². Layout-agnostic within a row. */
  const eStep = (y: Float64Array): number => {
    let err = 0;
    for (let r = 0; r < n; r++) {
      const o = r * cols;
      let sumAbs = 0;
      for (let k = 0; k < cols; k++) sumAbs += Math.abs(y[o + k]!);
      const alpha = sumAbs / cols;
      for (let k = 0; k < cols; k++) {
        const v = y[o + k]!;
        const target = v >= 0 ? alpha : -alpha;
        t[o + k] = target;
        err += (v - target) * (v - target);
      }
    }
    return err;
  };

  /** E-step at the current (R1, R2) in the transposed layout; returns Z^t = (X R2)^t and the error. */
  const eStepR1 = async (): Promise<{ zt: Float64Array; err: number }> => {
    const z = await gemm(x, r2, n * a, b, b); // Z[n,p,j] = Σ_q X[n,p,q] R2[q,j]
    const zt = transposeBlocks(z, n, a, b); // [N, b, a]
    const yt = await gemm(zt, r1, n * b, a, a); // Yt[n,j,i] = Σ_p Z[n,p,j] R1[p,i] = (R1ᵀ X_n R2)[i,j]
    return { zt, err: eStep(yt) };
  };

  for (let it = 0; it < iterations; it++) {
    // R1 step: M1[p,i] = Σ_{n,j} Z[n,p,j] T[n,i,j]  (T in the same transposed layout as Yt)
    const { zt, err } = await eStepR1();
    history.push(err);
    if (it > 0) {
      const prev = history[history.length - 2]!;
      if (prev - err <= 1e-7 * prev) break;
    }
    r1 = procrustes(await gemm(zt, t, a, n * b, a, { transposeA: true }), a);
    // R2 step: U = R1ᵀ X_n, Y = U R2, M2[q,j] = Σ_{n,i} U[n,i,q] T[n,i,j]
    const ut = await gemm(xt, r1, n * b, a, a); // Ut[n,q,i] = Σ_p X[n,p,q] R1[p,i]
    const u = transposeBlocks(ut, n, b, a); // [N, a, b]
    eStep(await gemm(u, r2, n * a, b, b));
    r2 = procrustes(await gemm(u, t, b, n * a, b, { transposeA: true }), b);
  }
  history.push((await eStepR1()).err);
  return { r1, r2, a, b, history };
}

/** [blocks, p, q] → [blocks, q, p] (transpose of each p×q block). */
function transposeBlocks(src: Float64Array, blocks: number, p: number, q: number): Float64Array {
  const out = new Float64Array(src.length);
  const size = p * q;
  for (let k = 0; k < blocks; k++) {
    const o = k * size;
    for (let i = 0; i < p; i++) for (let j = 0; j < q; j++) out[o + j * p + i] = src[o + i * q + j]!;
  }
  return out;
}

/** W' = W R for weight rows (same operation as the online activation rotation). */
export { rotateRows as rotateWeightRows } from './kronecker.js';

/** Kronecker product R1 ⊗ R2 as a dense (a·b)² matrix (tests only). */
export function kroneckerProduct(r1: Float64Array, a: number, r2: Float64Array, b: number): Float64Array {
  const n = a * b;
  const out = new Float64Array(n * n);
  for (let p = 0; p < a; p++)
    for (let i = 0; i < a; i++)
      for (let q = 0; q < b; q++)
        for (let j = 0; j < b; j++) out[(p * b + q) * n + i * b + j] = r1[p * a + i]! * r2[q * b + j]!;
  return out;
}

