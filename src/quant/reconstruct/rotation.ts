/**
 * BWLA's online Kronecker rotation of a linear's input (fixed during reconstruction): each row x of
 * length a·b, reshaped row-major to X [a, b], maps to X' = R1ᵀ X R2 (src/quant/recipe.ts); with a remainder
 * block (r > 0, row length a·b + r) the last r entries map to x_B R3.
 * The map is orthogonal, so the backward is G_X = R1 G_X' R2ᵀ (and g_B R3ᵀ). The R2 products of all rows are one
 * product of the engine's Gemm (the reconstruction's onnxruntime or device GEMM).
 */
import { alloc, jsGemm, type Arr, type Gemm } from './gemm.js';

export interface Rotation {
  readonly r1: Arr;
  readonly a: number;
  readonly r2: Arr;
  readonly b: number;
  /** remainder block R3 [r, r] (kronecker_remainder); absent or r = 0: none */
  readonly r3?: Arr;
  readonly r?: number;
}

/** x R (or g Rᵀ with `transpose`): R2 for every row in one product [rows·a, b] × [b, b], R1 and R3 row by row. */
async function apply<T extends Arr>(x: T, rows: number, rot: Rotation, transpose: boolean, gemm: Gemm): Promise<T> {
  const { r1, a, r2, b } = rot;
  const m = a * b;
  const rem = rot.r ?? 0;
  const r3 = rot.r3;
  if (rem > 0 && (r3 === undefined || r3.length !== rem * rem)) throw new Error(`rotation: remainder factor must be [${rem}, ${rem}]`);
  const n = m + rem;
  let xm = x;
  if (rem > 0) {
    xm = alloc(x, rows * m);
    for (let r = 0; r < rows; r++) xm.set(x.subarray(r * n, r * n + m), r * m);
  }
  // forward: tmp = X R2, out = R1ᵀ tmp;  backward: tmp = X R2ᵀ, out = R1 tmp
  const tmp = transpose ? await gemm.nt(xm, r2, rows * a, b, b) : await gemm.nn(xm, r2, rows * a, b, b);
  const out = alloc(x, rows * n);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    const t = r * m;
    for (let p = 0; p < a; p++) {
      for (let i = 0; i < a; i++) {
        const c = transpose ? r1[i * a + p]! : r1[p * a + i]!;
        if (c === 0) continue;
        for (let j = 0; j < b; j++) out[o + i * b + j] = out[o + i * b + j]! + c * tmp[t + p * b + j]!;
      }
    }
    for (let q = 0; q < rem; q++) {
      const v = x[o + m + q]!;
      if (v === 0) continue;
      for (let j = 0; j < rem; j++) out[o + m + j] = out[o + m + j]! + v * (transpose ? r3![j * rem + q]! : r3![q * rem + j]!);
    }
  }
  return out;
}

export function rotationForward<T extends Arr>(x: T, rows: number, rot: Rotation, gemm: Gemm = jsGemm): Promise<T> {
  return apply(x, rows, rot, false, gemm);
}

export function rotationBackward<T extends Arr>(g: T, rows: number, rot: Rotation, gemm: Gemm = jsGemm): Promise<T> {
  return apply(g, rows, rot, true, gemm);
}
