/**
 * The quantize numerics' Matmul (src/linalg/matmul.ts) when the blocks run on a GPU: products of at least
 * DEVICE_MIN_MACS multiply-adds go to the block engine's device (cuBLAS, FP32 operands and accumulation, the
 * transpositions passed to cuBLAS as flags: no host copy), smaller ones to `host` (onnxruntime's MLAS, or the JS
 * GEMM below its own threshold); float32 in and out.
 */
import type { Matmul } from '../linalg/matmul.js';

/** 2^18 multiply-adds, the host's own threshold for leaving its JS GEMM: every product the host would
 *  hand to onnxruntime goes to the device instead (a call costs tens of microseconds there). */
export const DEVICE_MIN_MACS = 1 << 18;

/** c [m, n] = op(a) op(b) on the device: op(a) [m, k] (transA: a is [k, m]), op(b) [k, n] (transB: b is [n, k]). */
export type DeviceMatmulT = (a: Float32Array, transA: boolean, b: Float32Array, transB: boolean, m: number, k: number, n: number) => Float32Array;

export function deviceMatmul(onDevice: DeviceMatmulT, host: Matmul, minMacs = DEVICE_MIN_MACS): Matmul {
  return async (a, b, m, k, n, options = {}) => {
    if (m * k * n < minMacs) return host(a, b, m, k, n, options);
    return onDevice(a, options.transposeA === true, b, options.transposeB === true, m, k, n);
  };
}
