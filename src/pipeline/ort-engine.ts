/**
 * The quantizer's matmul engine backed by onnxruntime (float32 MLAS Gemm, src/onnx/gemm-sessions.ts). Products
 * smaller than ~256k multiply-adds stay in the float64 JS GEMM (no session round trip).
 */
import { gemm, toFloat32 } from '../linalg/dense.js';
import type { Matmul } from '../linalg/matmul.js';
import { createGemmSessions } from '../onnx/gemm-sessions.js';

const SMALL = 1 << 18;

export interface OrtEngine {
  matmul: Matmul;
  close(): Promise<void>;
}

export function createOrtEngine(threads?: number): OrtEngine {
  const sessions = createGemmSessions('bwq-quant-gemm', threads);
  const matmul: Matmul = async (a, b, m, k, n, options = {}) => {
    if (m * k * n < SMALL) return gemm(a, b, m, k, n, options);
    const c = await sessions.run(options.transposeA === true, options.transposeB === true, toFloat32(a), toFloat32(b), m, k, n);
    return new Float64Array(c);
  };
  return { matmul, close: () => sessions.close() };
}
