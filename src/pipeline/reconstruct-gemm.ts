/**
 * The reconstruction's GEMMs (src/quant/reconstruct/gemm.ts) on onnxruntime's float32 MLAS Gemm
 * (transA / transB attributes, so nothing is transposed in JS; one session per layout). Products below
 * 2¹⁶ multiply-adds and float64 operands stay in the TypeScript loops.
 */
import { toFloat32 } from '../linalg/dense.js';
import { createGemmSessions } from '../onnx/gemm-sessions.js';
import { gemmNN, gemmNT, gemmTN, type Arr, type Gemm } from '../quant/reconstruct/gemm.js';

const SMALL = 1 << 16;

export interface ClosableGemm extends Gemm {
  close(): Promise<void>;
}

export function createOrtGemm(threads?: number): ClosableGemm {
  const sessions = createGemmSessions('bwq-reconstruct-gemm', threads);
  const run = async <T extends Arr>(ta: boolean, tb: boolean, a: T, b: Arr, m: number, k: number, n: number): Promise<T> => {
    return (await sessions.run(ta, tb, a as Float32Array, toFloat32(b), m, k, n)) as T;
  };
  const small = (a: Arr, m: number, k: number, n: number): boolean => !(a instanceof Float32Array) || m * k * n < SMALL || m === 0 || n === 0 || k === 0;
  return {
    nt: (a, b, m, k, n) => (small(a, m, k, n) ? Promise.resolve(gemmNT(a, b, m, k, n)) : run(false, true, a, b, m, k, n)),
    nn: (a, b, m, k, n) => (small(a, m, k, n) ? Promise.resolve(gemmNN(a, b, m, k, n)) : run(false, false, a, b, m, k, n)),
    tn: (a, b, m, k, n) => (small(a, m, k, n) ? Promise.resolve(gemmTN(a, b, m, k, n)) : run(true, false, a, b, m, k, n)),
    close: () => sessions.close(),
  };
}
