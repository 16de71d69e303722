/**
 * PSP's passes over a binarized weight W [rows, cols] (docs/ALGORITHMS.md §PSP): the O(rows·cols) loops of
 * src/quant/psp.ts and the simulated weight, behind one interface so that an engine can run them on its threads.
 * `jsWeightPasses` is the reference; the native addon's (src/native/weight-passes.ts → native/ops/binarize/binarize_cpu.cpp,
 * on the CPU kernels' thread pool) computes the same float64 expressions in the same order per row and is equal to it bit for bit
 * (test/quant/weight-passes.test.ts). Sums are per row; callers add the rows in order.
 *
 *   bStep:      t = fl(w − dense/dw); signs = sign⁺(t); scales_r = fl(Σ_c d2_c |t_c| / Σ_c d2_c)
 *   residual:   e = w − s_r b; residual = fl(e·dw); rowHalf_r = Σ_c (residual − dense)², rowPlain_r = Σ_c e²
 *   distance:   rowSum_r = Σ_c (a − b)²
 *   weight:     out = fl(s_r b + Σ_k lrA_rk lrB_kc)   (float64, k in order)
 * and the column-block compensation's (src/quant/column-blocks.ts):
 *   subtract:    dst = fl(dst − src)
 *   transpose:   out [cols, rows] = xᵀ
 *   blockErrors: q[r·ldq + c] = qb[r·width + c];  et[c·rows + r] = fl(fl(bt[c·rows + r] − qb[r·width + c]) / diag_c)
 *   signBlock:   b = sign⁺(block[r·width + c]); signs[r·ld + start + c] = b; out[r·width + c] = b·scales_r
 * and the group's per-row statistics (src/quant/layer-quant.ts):
 *   scaleFit:    num_r = Σ_c bh_rc (w − low)_rc, den_r = Σ_c bh_rc b_rc   (low empty: 0)
 *   binarization: err_r = max(0, Σ_c w² − cols·(Σ_c |w| / cols)²), energy_r = Σ_c w²
 *   packSigns:   bit j of word u of row r = 1 iff b[r, 32u + j] > 0 (bwq-packed-v1, src/quant/pack.ts)
 */
import { transposeF32 } from '../linalg/dense.js';
import { packSignRows } from './pack.js';
import { rowBinarization } from './binarize.js';
export interface WeightPasses {
  bStep(w: Float32Array, dense: Float32Array, dw: Float64Array, d2: Float64Array, rows: number, cols: number, signs: Int8Array, scales: Float32Array): void;
  residual(w: Float32Array, signs: Int8Array, scales: Float32Array, dw: Float64Array, dense: Float32Array, rows: number, cols: number,
    residual: Float32Array, rowHalf: Float64Array, rowPlain: Float64Array): void;
  distance(a: Float32Array, b: Float32Array, rows: number, cols: number, rowSum: Float64Array): void;
  weight(signs: Int8Array, scales: Float32Array, lrA: Float32Array, lrB: Float32Array, rank: number, rows: number, cols: number, out: Float32Array): void;
  subtract(dst: Float32Array, src: Float32Array, count: number): void;
  transpose(x: Float32Array, rows: number, cols: number): Float32Array;
  blockErrors(bt: Float32Array, qb: Float32Array, diag: Float64Array, rows: number, width: number, q: Float32Array, ldq: number, et: Float32Array): void;
  signBlock(block: Float32Array, rows: number, width: number, scales: Float32Array, signs: Int8Array, ld: number, start: number, out: Float32Array): void;
  scaleFit(bh: Float32Array, w: Float32Array, low: Float32Array, signs: Int8Array, rows: number, cols: number, num: Float64Array, den: Float64Array): void;
  binarization(w: Float32Array, rows: number, cols: number, err: Float64Array, energy: Float64Array): void;
  packSigns(signs: Int8Array, rows: number, cols: number): Uint32Array;
}

export const jsWeightPasses: WeightPasses = {
  bStep(w, dense, dw, d2, rows, cols, signs, scales) {
    let d2sum = 0;
    for (let c = 0; c < cols; c++) d2sum += d2[c]!;
    const t = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      for (let c = 0; c < cols; c++) t[c] = w[o + c]! - dense[o + c]! / dw[c]!;
      let acc = 0;
      for (let c = 0; c < cols; c++) {
        const x = t[c]!;
        signs[o + c] = x >= 0 ? 1 : -1;
        acc += d2[c]! * Math.abs(x);
      }
      scales[r] = acc / d2sum;
    }
  },
  residual(w, signs, scales, dw, dense, rows, cols, residual, rowHalf, rowPlain) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const s = scales[r]!;
      let half = 0;
      let plain = 0;
      for (let c = 0; c < cols; c++) {
        const e = w[o + c]! - s * signs[o + c]!;
        plain += e * e;
        const v = Math.fround(e * dw[c]!);
        residual[o + c] = v;
        const m = v - dense[o + c]!;
        half += m * m;
      }
      rowHalf[r] = half;
      rowPlain[r] = plain;
    }
  },
  distance(a, b, rows, cols, rowSum) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let s = 0;
      for (let c = 0; c < cols; c++) {
        const m = a[o + c]! - b[o + c]!;
        s += m * m;
      }
      rowSum[r] = s;
    }
  },
  weight(signs, scales, lrA, lrB, rank, rows, cols, out) {
    const row = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const s = scales[r]!;
      for (let c = 0; c < cols; c++) row[c] = s * signs[o + c]!;
      for (let k = 0; k < rank; k++) {
        const a = lrA[r * rank + k]!;
        const b0 = k * cols;
        for (let c = 0; c < cols; c++) row[c] = row[c]! + a * lrB[b0 + c]!;
      }
      out.set(row, o);
    }
  },
  subtract(dst, src, count) {
    for (let i = 0; i < count; i++) dst[i] = dst[i]! - src[i]!;
  },
  transpose: transposeF32,
  blockErrors(bt, qb, diag, rows, width, q, ldq, et) {
    for (let r = 0; r < rows; r++) {
      const oq = r * width;
      q.set(qb.subarray(oq, oq + width), r * ldq);
      for (let c = 0; c < width; c++) et[c * rows + r] = Math.fround(bt[c * rows + r]! - qb[oq + c]!) / diag[c]!;
    }
  },
  signBlock(block, rows, width, scales, signs, ld, start, out) {
    for (let r = 0; r < rows; r++) {
      const a = scales[r]!;
      for (let c = 0; c < width; c++) {
        const positive = block[r * width + c]! >= 0;
        signs[r * ld + start + c] = positive ? 1 : -1;
        out[r * width + c] = positive ? a : -a;
      }
    }
  },
  scaleFit(bh, w, low, signs, rows, cols, num, den) {
    const hasLow = low.length > 0;
    for (let r = 0; r < rows; r++) {
      let nr = 0;
      let dr = 0;
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        const v = bh[i]!;
        nr += v * (hasLow ? w[i]! - low[i]! : w[i]!);
        dr += v * signs[i]!;
      }
      num[r] = nr;
      den[r] = dr;
    }
  },
  binarization(w, rows, cols, err, energy) {
    for (let r = 0; r < rows; r++) {
      const row = rowBinarization(w, r, cols);
      err[r] = row.err;
      energy[r] = row.energy;
    }
  },
  packSigns: packSignRows,
};
