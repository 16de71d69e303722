/**
 * Orthogonal Procrustes: the orthogonal R [n, n] maximising tr(Rᵀ M) (equivalently minimising
 * ‖A R − B‖_F with M = Aᵀ B) is R = U Vᵀ where M = U S Vᵀ.
 */
import { gemm } from './dense.js';
import { svd } from './svd.js';

export function procrustes(mat: Float64Array, n: number): Float64Array {
  const { u, v } = svd(mat, n, n);
  return gemm(u, v, n, n, n, { transposeB: true });
}

/** argmin_R orthogonal ‖A R − B‖_F for A, B [rows, n]. */
export function procrustesAlign(a: Float64Array | Float32Array, b: Float64Array | Float32Array, rows: number, n: number): Float64Array {
  return procrustes(gemm(a, b, n, rows, n, { transposeA: true }), n);
}
