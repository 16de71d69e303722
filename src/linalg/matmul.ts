/**
 * Pluggable (async) dense matrix product for the quantization numerics: C = op(A)·op(B), float32 operands in and
 * float32 out, op = transpose when asked. `jsMatmul` is the pure-JS GEMM (sums in float64 JS numbers, rounded once
 * to float32); the quantize pipeline passes an onnxruntime-backed one (src/pipeline/ort-engine.ts, float32 MLAS)
 * or, on a GPU, the block engine's cuBLAS (src/pipeline/device-matmul.ts) for the large products. Large arrays
 * (weights, calibration rows, Gram matrices) stay Float32Array end to end: no conversion on either side.
 */
import { gemmNN, gemmNT, gemmTN } from './js-gemm.js';
import { transposeF32 } from './dense.js';
import type { Qr } from './qr.js';

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
  /** a buffer (≥ m·n values, distinct from a and b) the product may be written into, the result then a view of its
   *  front: a caller's scratch reused across products (a device writes a fresh array's pages far slower than a used
   *  one's); the host GEMMs ignore it */
  into?: Float32Array;
}

/** Values [offset, offset + count) of a kept array changed on the host: copies them to the device's copy. */
export type KeptUpdate = (offset: number, count: number) => void;

/** C[m,n] = op(A)[m,k] · op(B)[k,n]; A is [m,k] (or [k,m] with transposeA), B is [k,n] (or [n,k] with transposeB).
 *  `keep`, where the products run on a device: `x` is copied there once and used in place by every product of `body`
 *  that takes x, or a view of x's first values, as an operand; a caller that modifies x inside body names the changed
 *  values with `update` before the next product. */
export type Matmul = ((a: Float32Array, b: Float32Array, m: number, k: number, n: number, options?: MatmulOptions) => Promise<Float32Array>) & {
  keep?: <T>(x: Float32Array, body: (update: KeptUpdate) => Promise<T>) => Promise<T>;
};

const noUpdate: KeptUpdate = () => {};

/** body() with the arrays kept on the product's device (Matmul.keep) where it has one; plainly elsewhere. */
export function withKept<T>(mm: Matmul, arrays: readonly Float32Array[], body: () => Promise<T>): Promise<T> {
  if (mm.keep === undefined || arrays.length === 0) return body();
  const [first, ...rest] = arrays;
  return mm.keep(first!, () => withKept(mm, rest, body));
}

/** body(update) with x kept on the product's device (Matmul.keep), x modified by the caller between products and
 *  each change named with update; plainly (update does nothing) where the products have no device. */
export function withKeptUpdated<T>(mm: Matmul, x: Float32Array, body: (update: KeptUpdate) => Promise<T>): Promise<T> {
  return mm.keep === undefined ? body(noUpdate) : mm.keep(x, body);
}

/** y = x (R1 ⊗ R2) for the rows of x [rows, a·b] (src/quant/kronecker.ts rotateRows), float32 in and out. */
export type RotateRows = (x: Float32Array, rows: number, r1: Float32Array, a: number, r2: Float32Array, b: number) => Promise<Float32Array>;

/** The products the quantization numerics (src/quant/) are given: the GEMM and, optionally, the Kronecker rotation
 *  of an engine (the runtime's kron_rotate on the CPU threads or the GPU); without it the JS rotation runs. */
export interface Numerics {
  matmul: Matmul;
  rotateRows?: RotateRows;
  /** the randomized SVD's QR of its sketches (src/linalg/qr.ts; the addon's on the CPU threads, equal bit for bit) */
  qr?: Qr;
}

export const jsMatmul: Matmul = async (a, b, m, k, n, options = {}) => {
  const ta = options.transposeA === true;
  const tb = options.transposeB === true;
  if (ta && tb) return gemmTN(a, transposeF32(b, n, k), m, k, n);
  if (ta) return gemmTN(a, b, m, k, n);
  if (tb) return gemmNT(a, b, m, k, n);
  return gemmNN(a, b, m, k, n);
};
