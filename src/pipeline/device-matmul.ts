/**
 * The quantize numerics' Matmul (src/linalg/matmul.ts) when the blocks run on a GPU: products of at least
 * DEVICE_MIN_MACS multiply-adds go to the block engine's device (cuBLAS, FP32 operands and accumulation, the
 * transpositions passed to cuBLAS as flags: no host copy), smaller ones to `host` (onnxruntime's MLAS, or the JS
 * GEMM below its own threshold); float32 in and out.
 */
import type { KeptUpdate, Matmul } from '../linalg/matmul.js';
import type { DeviceArray } from '../runtime/block-runner.js';

/** 2^18 multiply-adds, the host's own threshold for leaving its JS GEMM: every product the host would
 *  hand to onnxruntime goes to the device instead (a call costs tens of microseconds there). */
export const DEVICE_MIN_MACS = 1 << 18;

/** The block engine's device products (BlockEngine.matmulT, createArray). */
export interface DeviceProducts {
  /** c [m, n] = op(a) op(b) on the device: op(a) [m, k] (transA: a is [k, m]), op(b) [k, n] (transB: b is [n, k]) */
  matmulT: (a: Float32Array | DeviceArray, transA: boolean, b: Float32Array | DeviceArray, transB: boolean, m: number, k: number, n: number,
    into?: Float32Array) => Promise<Float32Array>;
  /** device memory for kept operands (Matmul.keep); without it keep only runs its body */
  createArray?: (floats: number) => DeviceArray;
}

export function deviceMatmul(device: DeviceProducts, host: Matmul, minMacs = DEVICE_MIN_MACS): Matmul {
  const kept = new Map<Float32Array, DeviceArray>();
  // x itself, or a view of a kept array's first values (the product reads only its first m·k or k·n values)
  const onDevice = (x: Float32Array): Float32Array | DeviceArray => {
    const copy = kept.get(x);
    if (copy !== undefined) return copy;
    for (const [host, c] of kept) if (x.buffer === host.buffer && x.byteOffset === host.byteOffset && x.length <= host.length) return c;
    return x;
  };
  const mm: Matmul = async (a, b, m, k, n, options = {}) => {
    if (m * k * n < minMacs) return host(a, b, m, k, n, options);
    return device.matmulT(onDevice(a), options.transposeA === true, onDevice(b), options.transposeB === true, m, k, n, options.into);
  };
  mm.keep = async <T>(x: Float32Array, body: (update: KeptUpdate) => Promise<T>): Promise<T> => {
    const outer = kept.get(x);
    if (outer !== undefined) return body((offset, count) => outer.write(offset, x.subarray(offset, offset + count)));
    if (device.createArray === undefined || x.length === 0) return body(() => {});
    let copy: DeviceArray;
    try {
      copy = device.createArray(x.length);
    } catch {
      return body(() => {}); // no room on the device: the products upload x each time, as without keep
    }
    try {
      copy.write(0, x);
      kept.set(x, copy);
      return await body((offset, count) => copy.write(offset, x.subarray(offset, offset + count)));
    } finally {
      kept.delete(x);
      copy.free();
    }
  };
  return mm;
}
