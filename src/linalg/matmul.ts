/**
 * Pluggable (async) dense matrix product for the quantization numerics: C = op(A)·op(B), float32 operands in and
 * float32 out, op = transpose when asked. `jsMatmul` is the pure-JS GEMM (sums in float64 JS numbers, rounded once
 * to float32); the quantize pipeline passes an onnxruntime-backed one (src/pipeline/ort-engine.ts, float32 MLAS)
 * or, on a GPU, the block engine's cuBLAS (src/pipeline/device-matmul.ts) for the large products. Large arrays
 * (weights, calibration rows, Gram matrices) stay Float32Array end to end: no conversion on either side.
 */
import { gemmNN, gemmNT, gemmTN } from './js-gemm.js';
import { transposeF32 } from './dense.js';

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
}

/** C[m,n] = op(A)[m,k] · op(B)[k,n]; A is [m,k] (or [k,m] with transposeA), B is [k,n] (or [n,k] with transposeB). */
export type Matmul = (a: Float32Array, b: Float32Array, m: number, k: number, n: number, options?: MatmulOptions) => Promise<Float32Array>;

/** y = x (R1 ⊗ R2) for the rows of x [rows, a·b] (src/quant/kronecker.ts rotateRows), float32 in and out. */
export type RotateRows = (x: Float32Array, rows: number, r1: Float32Array, a: number, r2: Float32Array, b: number) => Promise<Float32Array>;

/** The products the quantization numerics (src/quant/) are given: the GEMM and, optionally, the Kronecker rotation
 *  of an engine (the runtime's kron_rotate on the CPU threads or the GPU); without it the JS rotation runs. */
export interface Numerics {
  matmul: Matmul;
  rotateRows?: RotateRows;
}

export const jsMatmul: Matmul = async (a, b, m, k, n, options = {}) => {
  const ta = options.transposeA === true;
  const tb = options.transposeB === true;
  if (ta && tb) return gemmTN(a, transposeF32(b, n, k), m, k, n);
  if (ta) return gemmTN(a, b, m, k, n);
  if (tb) return gemmNT(a, b, m, k, n);
  return gemmNN(a, b, m, k, n);
};
