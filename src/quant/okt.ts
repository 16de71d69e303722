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
import { identity, qr, Rng, procrustes } from '../linalg/index.js';
import { kroneckerFactors } from './kronecker.js';

export interface OktInput {
  data: Float32Array | Float64Array;
  rows: number;
}

export interface OktOptions {
  iterations?: number;
  init?: 'identity' | 'random';
  seed?: number;
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

export function learnOkt(weights: readonly OktInput[], cols: number, options: OktOptions = {}): OktResult {
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
  const z = new Float64Array(cols); // scratch (a×b)
  const y = new Float64Array(cols); // rotated row (a×b)
  const t = new Float64Array(cols); // targets (a×b)

  /** y = R1ᵀ X R2 of row n (via z = X R2) and t = α sign(y); returns the row's error. */
  const eStep = (n: number): number => {
    const xo = n * cols;
    z.fill(0);
    for (let p = 0; p < a; p++)
      for (let q = 0; q < b; q++) {
        const v = x[xo + p * b + q]!;
        for (let j = 0; j < b; j++) z[p * b + j] = z[p * b + j]! + v * r2[q * b + j]!;
      }
    y.fill(0);
    for (let p = 0; p < a; p++)
      for (let i = 0; i < a; i++) {
        const c = r1[p * a + i]!;
        for (let j = 0; j < b; j++) y[i * b + j] = y[i * b + j]! + c * z[p * b + j]!;
      }
    let sumAbs = 0;
    for (let k = 0; k < cols; k++) sumAbs += Math.abs(y[k]!);
    const alpha = sumAbs / cols;
    let err = 0;
    for (let k = 0; k < cols; k++) {
      t[k] = y[k]! >= 0 ? alpha : -alpha;
      const d = y[k]! - t[k]!;
      err += d * d;
    }
    return err;
  };

  const objective = (): number => {
    let e = 0;
    for (let n = 0; n < totalRows; n++) e += eStep(n);
    return e;
  };

  history.push(objective());
  for (let it = 0; it < iterations; it++) {
    // R1 step: M1 = Σ X_n R2 T_nᵀ = Σ z_n t_nᵀ  (a×a)
    const m1 = new Float64Array(a * a);
    for (let n = 0; n < totalRows; n++) {
      eStep(n);
      for (let p = 0; p < a; p++)
        for (let i = 0; i < a; i++) {
          let acc = 0;
          for (let j = 0; j < b; j++) acc += z[p * b + j]! * t[i * b + j]!;
          m1[p * a + i] = m1[p * a + i]! + acc;
        }
    }
    r1 = procrustes(m1, a);
    // R2 step: M2 = Σ X_nᵀ R1 T_n = Σ (R1ᵀ X_n)ᵀ T_n (b×b)
    const m2 = new Float64Array(b * b);
    const u = new Float64Array(cols); // R1ᵀ X_n
    for (let n = 0; n < totalRows; n++) {
      eStep(n);
      const xo = n * cols;
      u.fill(0);
      for (let p = 0; p < a; p++)
        for (let i = 0; i < a; i++) {
          const c = r1[p * a + i]!;
          for (let q = 0; q < b; q++) u[i * b + q] = u[i * b + q]! + c * x[xo + p * b + q]!;
        }
      for (let i = 0; i < a; i++)
        for (let q = 0; q < b; q++) {
          const uv = u[i * b + q]!;
          for (let j = 0; j < b; j++) m2[q * b + j] = m2[q * b + j]! + uv * t[i * b + j]!;
        }
    }
    r2 = procrustes(m2, b);
    history.push(objective());
    const prev = history[history.length - 2]!;
    const cur = history[history.length - 1]!;
    if (prev - cur <= 1e-7 * prev) break;
  }
  return { r1, r2, a, b, history };
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

