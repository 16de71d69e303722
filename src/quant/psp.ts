/**
 * Proximal SVD Projection (BWLA): refine a binarized weight with a low-rank term,
 *
 *   min_{α, B ∈ {±1}, L}  ½ ‖W − diag(α) B − L‖_F² + τ ‖L‖_*,   rank(L) ≤ r
 *
 * by alternating (docs/ALGORITHMS.md §PSP):
 *   L  ← prox_{τ‖·‖_*}(W − diag(α) B) = U_r · diag(max(σ_i − τ, 0)) · V_rᵀ   (truncated SVT)
 *   B, α ← sign⁺(W − L), mean|W − L| (row-wise)
 * and a final L-step for the final B. τ = tauRatio · σ_{r+1}(E) of the current residual E (so the
 * kept directions are shrunk relative to the first discarded one). Both steps are exact minimisers
 * of the objective in their block, so the objective is monotone non-increasing.
 */
import { jsMatmul, randomizedSvd, type Matmul } from '../linalg/index.js';
import { binarizeRows } from './binarize.js';

export interface PspOptions {
  rank: number;
  iterations?: number;
  tauRatio?: number;
  /**
   * Optional per-input-channel weights d (length cols, > 0): the L-step then fits the weighted
   * residual E·diag(d) (activation-aware, d = RMS of the calibration inputs per channel) and
   * un-weights the right factor: L = SVT(E·diag(d))·diag(d)⁻¹.
   */
  columnWeights?: Float64Array;
  seed?: number;
  matmul?: Matmul;
}

export interface PspResult {
  signs: Int8Array;
  scales: Float32Array;
  /** [rows, rank] = U_r diag(σ'), rank may be 0 */
  lrA: Float32Array;
  /** [rank, cols] = V_rᵀ */
  lrB: Float32Array;
  rank: number;
  /** ‖W − αB‖_F before PSP */
  errorBefore: number;
  /** ‖W − αB − L‖_F after PSP */
  errorAfter: number;
}

export async function psp(w: Float32Array | Float64Array, rows: number, cols: number, options: PspOptions): Promise<PspResult> {
  const mm = options.matmul ?? jsMatmul;
  const rank = Math.min(options.rank, rows, cols);
  const iterations = options.iterations ?? 3;
  const tauRatio = options.tauRatio ?? 0.25;
  let { signs, scales } = binarizeRows(w, rows, cols);
  const residual = new Float64Array(rows * cols);
  const fillResidual = (): void => {
    for (let r = 0; r < rows; r++) {
      const s = scales[r]!;
      for (let c = 0; c < cols; c++) residual[r * cols + c] = w[r * cols + c]! - s * signs[r * cols + c]!;
    }
  };
  fillResidual();
  const errorBefore = norm(residual);
  if (rank <= 0) {
    return { signs, scales, lrA: new Float32Array(0), lrB: new Float32Array(0), rank: 0, errorBefore, errorAfter: errorBefore };
  }
  let lowRank: Float64Array = new Float64Array(rows * cols);
  let factors = { a: new Float64Array(0), b: new Float64Array(0), rank: 0 };
  const lStep = async (seed: number): Promise<void> => {
    const dw = options.columnWeights;
    let target = residual;
    if (dw !== undefined) {
      target = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) target[r * cols + c] = residual[r * cols + c]! * dw[c]!;
    }
    const t = await randomizedSvd(target, rows, cols, rank + 1, { seed, oversample: 8, powerIterations: 2, matmul: mm });
    const tau = tauRatio * (t.s[rank] ?? 0);
    let kept = 0;
    for (let k = 0; k < Math.min(rank, t.rank); k++) if (t.s[k]! - tau > 0) kept++;
    const a = new Float64Array(rows * kept);
    const b = new Float64Array(kept * cols);
    for (let k = 0; k < kept; k++) {
      const sigma = t.s[k]! - tau;
      for (let r = 0; r < rows; r++) a[r * kept + k] = t.u[r * t.rank + k]! * sigma;
      for (let c = 0; c < cols; c++) b[k * cols + c] = t.v[c * t.rank + k]! / (dw === undefined ? 1 : dw[c]!);
    }
    lowRank = kept === 0 ? new Float64Array(rows * cols) : await mm(a, b, rows, kept, cols);
    factors = { a, b, rank: kept };
  };
  const seed = options.seed ?? 0;
  const target = new Float64Array(rows * cols);
  for (let it = 0; it < iterations; it++) {
    await lStep(seed + it);
    for (let i = 0; i < target.length; i++) target[i] = w[i]! - lowRank[i]!;
    ({ signs, scales } = binarizeRows(target, rows, cols));
    fillResidual();
  }
  await lStep(seed + iterations);
  let err = 0;
  for (let i = 0; i < residual.length; i++) {
    const d = residual[i]! - lowRank[i]!;
    err += d * d;
  }
  return {
    signs,
    scales,
    lrA: Float32Array.from(factors.a),
    lrB: Float32Array.from(factors.b),
    rank: factors.rank,
    errorBefore,
    errorAfter: Math.sqrt(err),
  };
}

/** Dense diag(scales)·signs + lrA·lrB as Float32 [rows, cols] (the simulated weight). */
export function reconstructWeight(signs: Int8Array, scales: Float32Array, lrA: Float32Array, lrB: Float32Array, rank: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let c = 0; c < cols; c++) {
      let v = s * signs[r * cols + c]!;
      for (let k = 0; k < rank; k++) v += lrA[r * rank + k]! * lrB[k * cols + c]!;
      out[r * cols + c] = v;
    }
  }
  return out;
}

function norm(a: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}
