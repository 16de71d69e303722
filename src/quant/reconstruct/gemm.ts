/**
 * Dense products for the reconstruction ops (forward and backward of one decoder block), on
 * Float32Array (production) or Float64Array (finite-difference tests) — the result has the type of
 * the first operand. Three layouts cover every product a block's backward needs:
 *
 *   nt: C[m,n] = A[m,k]·B[n,k]ᵀ      (y = x Wᵀ, scores = Q Kᵀ, dP = dO Vᵀ)
 *   nn: C[m,n] = A[m,k]·B[k,n]       (dx = dy W, ctx = P V, dQ = dS K)
 *   tn: C[m,n] = A[k,m]ᵀ·B[k,n]      (dW = dyᵀ x, dV = Pᵀ dO, dK = dSᵀ Q)
 *
 * Sums accumulate in float64. `jsGemm` is the pure TypeScript engine; the quantize pipeline passes an
 * onnxruntime-backed one for large products (src/pipeline/reconstruct.ts).
 */

import { alloc, gemmNN, gemmNT, gemmTN, type Arr } from '../../linalg/js-gemm.js';

export { alloc, gemmNN, gemmNT, gemmTN, type Arr };

export interface Gemm {
  nt<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number): Promise<T>;
  nn<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number): Promise<T>;
  tn<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number): Promise<T>;
}

export const jsGemm: Gemm = {
  nt: async (a, b, m, k, n) => gemmNT(a, b, m, k, n),
  nn: async (a, b, m, k, n) => gemmNN(a, b, m, k, n),
  tn: async (a, b, m, k, n) => gemmTN(a, b, m, k, n),
};

/** a += b (same length). */
export function addInto(a: Arr, b: Arr): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}
