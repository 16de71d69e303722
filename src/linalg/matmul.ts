/**
 * Pluggable (async) dense matrix product for the quantization numerics: C = op(A)·op(B) as
 * Float64Array, op = transpose when asked. `jsMatmul` is the pure-JS GEMM (float64); the
 * quantize pipeline passes an onnxruntime-backed one (src/pipeline/ort-engine.ts, float32 MLAS,
 * ~50× faster) for the large products.
 */
import { gemm, type Floats } from './dense.js';

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
}

/** C[m,n] = op(A)[m,k] · op(B)[k,n]; A is [m,k] (or [k,m] with transposeA), B is [k,n] (or [n,k] with transposeB). */
export type Matmul = (a: Floats, b: Floats, m: number, k: number, n: number, options?: MatmulOptions) => Promise<Float64Array>;

export const jsMatmul: Matmul = async (a, b, m, k, n, options = {}) => gemm(a, b, m, k, n, options);
