/**
 * The quantizer's matmul engine backed by onnxruntime (float32 MLAS Gemm, src/onnx/gemm-sessions.ts): float32 in and
 * out, no conversion. Products smaller than ~256k multiply-adds stay in the JS GEMM (no session round trip).
 */
import { jsMatmul, type Matmul } from '../linalg/matmul.js';
import { createGemmSessions } from '../onnx/gemm-sessions.js';

const SMALL = 1 << 18;

export interface OrtEngine {
  matmul: Matmul;
  close(): Promise<void>;
}

export function createOrtEngine(threads?: number): OrtEngine {
  const sessions = createGemmSessions('bwq-quant-gemm', threads);
  const matmul: Matmul = async (a, b, m, k, n, options = {}) => {
    if (m * k * n < SMALL) return jsMatmul(a, b, m, k, n, options);
    return sessions.run(options.transposeA === true, options.transposeB === true, a, b, m, k, n);
  };
  return { matmul, close: () => sessions.close() };
}
