/**
 * The reconstruction's GEMMs (src/quant/reconstruct/gemm.ts). On the CPU: onnxruntime's float32 MLAS Gemm
 * (transA / transB attributes, so nothing is transposed in JS; one session per layout); products below 2¹⁶
 * multiply-adds and float64 operands stay in the TypeScript loops. When the block engine runs on a GPU,
 * `createDeviceGemm` sends float32 products of at least DEVICE_MIN_MACS multiply-adds to the engine's device
 * (the runtime's matmul_t: cuBLAS FP32 with the layout's transpositions as flags, no transposition on the host)
 * and the rest to the CPU GEMMs.
 */
import { toFloat32 } from '../linalg/dense.js';
import { createGemmSessions } from '../onnx/gemm-sessions.js';
import { gemmNN, gemmNT, gemmTN, type Arr, type Gemm } from '../quant/reconstruct/gemm.js';
import { DEVICE_MIN_MACS } from './device-matmul.js';

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

/** The block engine's c = op(a)·op(b) (src/runtime/block-runner.ts BlockEngine.matmulT). */
export type DeviceMatmulT = (a: Float32Array, transA: boolean, b: Float32Array, transB: boolean, m: number, k: number, n: number) => Promise<Float32Array>;

/** Large float32 products on the device, the others (and `close`) on `host`. */
export function createDeviceGemm(matmulT: DeviceMatmulT, host: ClosableGemm, minMacs = DEVICE_MIN_MACS): ClosableGemm {
  const large = (a: Arr, b: Arr, m: number, k: number, n: number): boolean =>
    a instanceof Float32Array && b instanceof Float32Array && m * k * n >= minMacs;
  const device = <T extends Arr>(ta: boolean, tb: boolean, a: T, b: Arr, m: number, k: number, n: number): Promise<T> => {
    try {
      return matmulT(a as Float32Array, ta, b as Float32Array, tb, m, k, n) as Promise<T>;
    } catch (error) {
      return Promise.reject(error);
    }
  };
  return {
    nt: (a, b, m, k, n) => (large(a, b, m, k, n) ? device(false, true, a, b, m, k, n) : host.nt(a, b, m, k, n)),
    nn: (a, b, m, k, n) => (large(a, b, m, k, n) ? device(false, false, a, b, m, k, n) : host.nn(a, b, m, k, n)),
    tn: (a, b, m, k, n) => (large(a, b, m, k, n) ? device(true, false, a, b, m, k, n) : host.tn(a, b, m, k, n)),
    close: () => host.close(),
  };
}
