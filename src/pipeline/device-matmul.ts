/**
 * The quantize numerics' Matmul (src/linalg/matmul.ts) when the blocks run on a GPU: products of at least
 * DEVICE_MIN_MACS multiply-adds go to the block engine's device (cuBLAS, FP32 operands and accumulation), smaller
 * ones to `host` (onnxruntime's MLAS, or the JS GEMM below its own threshold); float32 in and out. The device takes
 * c = a·wᵀ with a [m, k] and w [n, k]; the other transposition cases are rearranged on the host first (O(mk + kn)
 * copies against O(mkn) multiply-adds).
 */
import type { Matmul } from '../linalg/matmul.js';
import { transposeF32 } from '../linalg/dense.js';

/** 2^18 multiply-adds, the host's own threshold for leaving its JS GEMM: every product the host would
 *  hand to onnxruntime goes to the device instead (a call costs tens of microseconds there). */
export const DEVICE_MIN_MACS = 1 << 18;

/** The first `count` values (a view, no copy). */
function head(x: Float32Array, count: number): Float32Array {
  return x.length === count ? x : x.subarray(0, count);
}

export function deviceMatmul(
  onDevice: (a: Float32Array, m: number, k: number, w: Float32Array, n: number) => Float32Array,
  host: Matmul,
  minMacs = DEVICE_MIN_MACS,
): Matmul {
  return async (a, b, m, k, n, options = {}) => {
    if (m * k * n < minMacs) return host(a, b, m, k, n, options);
    const a32 = options.transposeA === true ? transposeF32(a, k, m) : head(a, m * k);
    const w32 = options.transposeB === true ? head(b, n * k) : transposeF32(b, k, n);
    return onDevice(a32, m, k, w32, n);
  };
}
