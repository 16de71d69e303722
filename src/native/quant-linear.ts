/**
 * One linear layer of the native forward pass, for rows x [M, K]:
 *
 *   x' = x (R1 ⊗ R2)                    online Kronecker rotation (if the recipe names one;
 *                                       diag(R1 ⊗ R2, R3) for kronecker_remainder)
 *   (codes, s) = quantize(x')           per row, recipe semantics (activation-codes.ts)
 *   acc[m, n] = Σ_k code[m, k]·B[n, k]  exact integers from the packed kernel
 *   y[m, n] = s[m]·wscale[n]·acc[m, n] + ((x̂ lr_bᵀ) lr_aᵀ)[m, n] + bias[n],   x̂ = s·code
 *
 * Quantizers without an integer kernel (none, int wider than 8 bits) and float (unpacked)
 * linears multiply x̂ with the float weight diag(wscale)·B (+ low-rank) instead.
 */
import { activationCodes, dequantize, type ActivationCodes } from './activation-codes.js';
import type { FloatGemm } from './float-gemm.js';
import type { LinearInput, NativeLinear, PackedLinear, Rotation } from './packed-model.js';
import type { IntegerGemmKernels } from './reference-kernels.js';
import { addBiasRows } from './transformer-ops.js';

/**
 * Online Kronecker rotation of every row with two float GEMMs over all rows at once
 * (tested against the definition and src/quant/kronecker.ts rotateRows):
 *   T = X·R2 on [rows·a, b];  per row, X' = R1ᵀ·T ⇔ X'ᵀ = Tᵀ·R1, on [rows·b, a].
 */
export async function rotateRows(x: Float32Array, rows: number, rotation: Rotation, gemm: FloatGemm): Promise<Float32Array> {
  const { a, b, r1, r2, r, r3 } = rotation;
  if (r > 0 && r3 !== undefined) return rotateRowsWithRemainder(x, rows, rotation, r3, gemm);
  const n = a * b;
  const t = await gemm.plain(x.length === rows * n ? x : x.subarray(0, rows * n), rows * a, b, r2, b);
  const tt = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) tt[o + q * a + p] = t[o + p * b + q]!;
  }
  const ut = await gemm.plain(tt, rows * b, a, r1, a);
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    for (let q = 0; q < b; q++) for (let i = 0; i < a; i++) out[o + i * b + q] = ut[o + q * a + i]!;
  }
  return out;
}

/** diag(R1 ⊗ R2, R3) on rows of width a·b + r: the first a·b columns as above, the last r times R3 (one GEMM). */
async function rotateRowsWithRemainder(x: Float32Array, rows: number, rotation: Rotation, r3: Float32Array, gemm: FloatGemm):
  Promise<Float32Array> {
  const m = rotation.a * rotation.b;
  const { r } = rotation;
  const n = m + r;
  const head = new Float32Array(rows * m);
  const tail = new Float32Array(rows * r);
  for (let t = 0; t < rows; t++) {
    head.set(x.subarray(t * n, t * n + m), t * m);
    tail.set(x.subarray(t * n + m, t * n + n), t * r);
  }
  const rotatedHead = await rotateRows(head, rows, { ...rotation, r: 0, r3: undefined }, gemm);
  const rotatedTail = await gemm.plain(tail, rows, r, r3, r);
  const out = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++) {
    out.set(rotatedHead.subarray(t * m, t * m + m), t * n);
    out.set(rotatedTail.subarray(t * r, t * r + r), t * n + m);
  }
  return out;
}

/** Rotation + quantization of the input rows (shared by linears with the same LinearInput.key). */
export async function prepareInput(x: Float32Array, rows: number, cols: number, input: LinearInput, gemm: FloatGemm):
  Promise<ActivationCodes> {
  const r = input.rotation;
  const rotated = r === undefined ? x : await rotateRows(x, rows, r, gemm);
  return activationCodes(rotated, rows, cols, input.quantizer);
}

const denseCache = new WeakMap<PackedLinear, Float32Array>();

/** diag(wscale)·B as a float matrix [N, K] (cached per linear). */
export function denseBinaryWeight(lin: PackedLinear): Float32Array {
  let w = denseCache.get(lin);
  if (w !== undefined) return w;
  const n = lin.outFeatures;
  const k = lin.inFeatures;
  const words = (k + 31) >>> 5;
  w = new Float32Array(n * k);
  for (let j = 0; j < n; j++) {
    const s = lin.wscale[j]!;
    for (let kk = 0; kk < k; kk++) {
      w[j * k + kk] = (lin.qweight[j * words + (kk >>> 5)]! >>> (kk & 31)) & 1 ? s : -s;
    }
  }
  denseCache.set(lin, w);
  return w;
}

/** y [rows, N] = linear(x̂) for prepared input codes. */
export async function applyLinear(lin: NativeLinear, a: ActivationCodes, rows: number, kernels: IntegerGemmKernels,
  gemm: FloatGemm): Promise<Float32Array> {
  const n = lin.outFeatures;
  const k = lin.inFeatures;
  let y: Float32Array;
  if (lin.kind === 'float') {
    y = await gemm.transB(dequantize(a, rows, k), rows, k, lin.weight, n);
  } else {
    if (a.kind === 'float') {
      y = await gemm.transB(a.values, rows, k, denseBinaryWeight(lin), n);
    } else {
      let acc: Int32Array | Float64Array;
      if (a.kind === 'int8') acc = kernels.int8BinaryGemm(a.codes, lin.qweight, rows, n, k);
      else if (a.kind === 'ternary') acc = kernels.ternaryBinaryGemm(a.plus, a.minus, lin.qweight, rows, n, k);
      else {
        const hi = kernels.int8BinaryGemm(a.high, lin.qweight, rows, n, k);
        const lo = kernels.int8BinaryGemm(a.low, lin.qweight, rows, n, k);
        acc = new Float64Array(rows * n);
        for (let i = 0; i < acc.length; i++) acc[i] = 256 * hi[i]! + lo[i]!;
      }
      y = new Float32Array(rows * n);
      const ws = lin.wscale;
      for (let m = 0; m < rows; m++) {
        const s = a.scales[m]!;
        const o = m * n;
        for (let j = 0; j < n; j++) y[o + j] = s * ws[j]! * acc[o + j]!;
      }
    }
    if (lin.lrA !== undefined && lin.lrB !== undefined && lin.rank > 0) {
      const xhat = dequantize(a, rows, k);
      const t = await gemm.transB(xhat, rows, k, lin.lrB, lin.rank);
      const low = await gemm.transB(t, rows, lin.rank, lin.lrA, n);
      for (let i = 0; i < y.length; i++) y[i] = y[i]! + low[i]!;
    }
  }
  if (lin.bias !== undefined) addBiasRows(y, rows, n, lin.bias);
  return y;
}
