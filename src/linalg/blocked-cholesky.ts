/**
 * The inverse Cholesky factor of large symmetric positive definite matrices with the O(n³) work
 * in Matmul products (the engine's GEMM: native threads on the CPU, cuBLAS on a GPU), float32 storage, and a
 * float64 host factorisation only for the small diagonal leaves. Recursive 2 × 2 blocking:
 *
 *   A = [A11 A21ᵀ; A21 A22]:  L11⁻¹                            (recursively)
 *                             L21 = A21 · L11⁻ᵀ
 *                             L22⁻¹ of A22 − L21 L21ᵀ          (recursively)
 *                             (L⁻¹)21 = −L22⁻¹ · L21 · L11⁻¹
 *
 * about (2/3)·n³ multiply-adds, all in four GEMMs per level; the host holds about 3·n² floats besides A. GPTQ-style compensation
 * needs U, the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU). With J the reversal permutation, chol(J H J) = J Uₕ J
 * gives H = Uₕ Uₕᵀ (Uₕ upper), so H⁻¹ = (Uₕ⁻¹)ᵀ Uₕ⁻¹ and U = Uₕ⁻¹; J M J of a row-major square matrix is its
 * flat array reversed. src/linalg/cholesky.ts is the float64 reference these are tested against.
 */
import type { Matmul } from './matmul.js';
import { choleskyLower, invertLower } from './cholesky.js';
import { copyBlock } from './dense.js';

/** matrices up to this order are factorised on the host in float64 */
const LEAF = 128;

function place(dst: Float32Array, n: number, src: Float32Array, r0: number, c0: number, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * cols, (r + 1) * cols), (r0 + r) * n + c0);
}

/** −A[r0:r1, c0:c1] of a row-major n-column matrix, as its own array. */
function negatedBlock(a: Float32Array, n: number, r0: number, r1: number, c0: number, c1: number): Float32Array {
  const w = c1 - c0;
  const out = new Float32Array((r1 - r0) * w);
  for (let r = r0; r < r1; r++) {
    const o = (r - r0) * w;
    const i = r * n + c0;
    for (let c = 0; c < w; c++) out[o + c] = -a[i + c]!;
  }
  return out;
}

/** L⁻¹ of the lower-triangular Cholesky factor L of A (A = L Lᵀ; row-major n × n, zero above the diagonal).
 *  A is not modified. Only L21 of each level is formed; L itself is never assembled. */
export async function inverseCholeskyFactor(a: Float32Array, n: number, mm: Matmul): Promise<Float32Array> {
  if (a.length !== n * n) throw new Error(`inverseCholeskyFactor: ${a.length} elements for [${n}, ${n}]`);
  if (n <= LEAF) return Float32Array.from(invertLower(choleskyLower(Float64Array.from(a), n), n));
  const h = Math.floor(n / 2 / 64) * 64 || Math.floor(n / 2);
  const m = n - h;
  const out = new Float32Array(n * n);
  const top = await inverseCholeskyFactor(copyBlock(a, n, 0, h, 0, h), h, mm);
  place(out, n, top, 0, 0, h, h);
  // −L21 = −A21 · L11⁻ᵀ: negated once here (IEEE rounding is symmetric: every product below is the exact negation
  // of the unnegated one), so the outer product needs no sign and the last block comes out with its own
  const negL21 = await mm(negatedBlock(a, n, h, n, 0, h), top, m, h, h, { transposeB: true });
  const schur = copyBlock(a, n, h, n, h, n);
  const outer = await mm(negL21, negL21, m, h, m, { transposeB: true }); // L21 L21ᵀ
  for (let i = 0; i < schur.length; i++) schur[i] = schur[i]! - outer[i]!;
  const bottom = await inverseCholeskyFactor(schur, m, mm); // L22⁻¹
  place(out, n, bottom, h, h, m, m);
  place(out, n, await mm(bottom, await mm(negL21, top, m, h, h), m, m, h), h, 0, m, h); // −L22⁻¹ · L21 · L11⁻¹
  return out;
}

/** For a symmetric positive definite H (row-major n × n, not modified): U upper with H⁻¹ = UᵀU (GPTQ's
 *  `cholesky(cholesky_inverse(cholesky(H)), upper=True)`). */
export async function upperCholeskyOfInverseGemm(h: Float32Array, n: number, mm: Matmul): Promise<Float32Array> {
  return (await inverseCholeskyFactor(Float32Array.from(h).reverse(), n, mm)).reverse();
}
