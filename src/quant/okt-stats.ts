/**
 * Statistics that say whether a rotation did its job (docs/ALGORITHMS.md §OKT), for the quantize
 * report and the OKT objective:
 *   relative binarization error²  ε(W) = Σ_n min_α ‖w_n − α sign(w_n)‖² / ‖W‖_F²
 *                                      (1 − 2/π ≈ 0.363 for Gaussian rows);
 *   crest factor                  mean_t max_k |x_tk| / rms(x_t)   (tokens with x_t = 0 skipped);
 *   activation tail (4th moment)  κ(X) = (K/3) · mean_t ‖x_t‖₄⁴ / ‖x_t‖₂⁴   (1 for Gaussian rows).
 */
import { binarizationError } from './binarize.js';

/** 1 − 2/π: the relative binarization error² of a Gaussian row (E|g|² / E g² = 2/π). */
export const GAUSSIAN_BINARIZATION_ERROR = 1 - 2 / Math.PI;

export function relativeBinarizationError(w: Float32Array | Float64Array, rows: number, cols: number): number {
  let energy = 0;
  for (let i = 0; i < rows * cols; i++) energy += w[i]! * w[i]!;
  return energy > 0 ? binarizationError(w, rows, cols) / energy : 0;
}

export function crestFactor(x: Float32Array | Float64Array, tokens: number, cols: number): number {
  let sum = 0;
  let counted = 0;
  for (let t = 0; t < tokens; t++) {
    let max = 0;
    let ss = 0;
    for (let c = 0; c < cols; c++) {
      const v = Math.abs(x[t * cols + c]!);
      if (v > max) max = v;
      ss += v * v;
    }
    if (ss === 0) continue;
    sum += max / Math.sqrt(ss / cols);
    counted++;
  }
  return counted > 0 ? sum / counted : 0;
}

export function activationTail(x: Float32Array | Float64Array, tokens: number, cols: number): number {
  let sum = 0;
  let counted = 0;
  for (let t = 0; t < tokens; t++) {
    let s2 = 0;
    let s4 = 0;
    for (let c = 0; c < cols; c++) {
      const v = x[t * cols + c]! * x[t * cols + c]!;
      s2 += v;
      s4 += v * v;
    }
    if (s2 === 0) continue;
    sum += s4 / (s2 * s2);
    counted++;
  }
  return counted > 0 ? (cols / 3) * (sum / counted) : 0;
}
