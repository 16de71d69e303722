/**
 * The float GEMMs of the native forward pass (lm_head, float attention products, unpacked
 * linears): C[m, n] = A[m, k]·W[n, k]ᵀ (or A·W with W [k, n]). Large products go to
 * onnxruntime's MLAS GEMM (B's ortMatmul, SIMD + threads); small ones and the 'js' mode use the
 * blocked TypeScript loop (float64 accumulation). None of these touch the packed 1-bit weights.
 * onnxruntime is imported on first use, so the 'js' mode runs without it.
 */
import { gemmNN } from '../linalg/js-gemm.js';
import { matmulTransB } from './transformer-ops.js';

export type FloatGemmMode = 'ort' | 'js';

export interface FloatGemm {
  readonly mode: FloatGemmMode;
  /** C[m, n] = A[m, k]·W[n, k]ᵀ */
  transB(a: Float32Array, m: number, k: number, w: Float32Array, n: number): Promise<Float32Array>;
  /** C[m, n] = A[m, k]·B[k, n] */
  plain(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Promise<Float32Array>;
}

/** Products smaller than this (m·k·n multiply-adds) stay in TypeScript (session-call overhead). */
const ORT_MIN_MACS = 1 << 20;

type OrtMatmul = typeof import('../onnx/ort-matmul.js').ortMatmul;
let ortMatmulLoaded: Promise<OrtMatmul> | undefined;
function loadOrtMatmul(): Promise<OrtMatmul> {
  ortMatmulLoaded ??= import('../onnx/ort-matmul.js').then((m) => m.ortMatmul);
  return ortMatmulLoaded;
}

export function createFloatGemm(mode: FloatGemmMode, threads?: number): FloatGemm {
  const options = threads === undefined ? {} : { threads };
  const useOrt = (m: number, k: number, n: number): boolean => mode === 'ort' && m * k * n >= ORT_MIN_MACS;
  return {
    mode,
    async transB(a, m, k, w, n) {
      if (useOrt(m, k, n)) {
        const ortMatmul = await loadOrtMatmul();
        return ortMatmul(a.length === m * k ? a : a.subarray(0, m * k), w.length === n * k ? w : w.subarray(0, n * k),
          m, k, n, { transposeB: true, ...options });
      }
      return matmulTransB(a, m, k, w, n);
    },
    async plain(a, m, k, b, n) {
      if (useOrt(m, k, n)) {
        const ortMatmul = await loadOrtMatmul();
        return ortMatmul(a.length === m * k ? a : a.subarray(0, m * k), b.length === k * n ? b : b.subarray(0, k * n),
          m, k, n, options);
      }
      return gemmNN(a, b, m, k, n);
    },
  };
}
