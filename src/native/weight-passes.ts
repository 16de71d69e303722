/** The native addon's PSP passes (native/ops/binarize/binarize_cpu.cpp) as src/quant/weight-passes.ts's WeightPasses. */
import type { WeightPasses } from '../quant/weight-passes.js';
import { optionalAddonFunctions } from './loader.js';

interface WeightPassesAddon {
  pspBStep(w: Float32Array, dense: Float32Array, dw: Float64Array, d2: Float64Array, rows: number, cols: number, signs: Int8Array, scales: Float32Array): void;
  pspResidual(w: Float32Array, signs: Int8Array, scales: Float32Array, dw: Float64Array, dense: Float32Array, rows: number, cols: number,
    residual: Float32Array, rowHalf: Float64Array, rowPlain: Float64Array): void;
  rowSquaredDistance(a: Float32Array, b: Float32Array, rows: number, cols: number, rowSum: Float64Array): void;
  binaryLowRankWeight(signs: Int8Array, scales: Float32Array, lrA: Float32Array, lrB: Float32Array, rank: number, rows: number, cols: number, out: Float32Array): void;
  subtractF32(dst: Float32Array, src: Float32Array, count: number): void;
  transposeF32(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  blockErrors(bt: Float32Array, qb: Float32Array, diag: Float64Array, rows: number, width: number, q: Float32Array, ldq: number, et: Float32Array): void;
  signBlock(block: Float32Array, rows: number, width: number, scales: Float32Array, signs: Int8Array, ld: number, start: number, out: Float32Array): void;
  scaleFit(bh: Float32Array, w: Float32Array, low: Float32Array, signs: Int8Array, rows: number, cols: number, num: Float64Array, den: Float64Array): void;
  binarizationRows(w: Float32Array, rows: number, cols: number, err: Float64Array, energy: Float64Array): void;
  packSigns(signs: Int8Array, rows: number, cols: number, out: Uint32Array): void;
}

/** The addon's passes on the CPU kernels' threads, or undefined when the addon is not built (or predates them). */
export function nativeWeightPasses(): WeightPasses | undefined {
  const addon = optionalAddonFunctions<WeightPassesAddon>(['pspBStep', 'pspResidual', 'rowSquaredDistance', 'binaryLowRankWeight',
    'subtractF32', 'transposeF32', 'blockErrors', 'signBlock', 'scaleFit', 'binarizationRows', 'packSigns']);
  if (addon === undefined) return undefined;
  const { pspBStep, pspResidual, rowSquaredDistance, binaryLowRankWeight, subtractF32, transposeF32, blockErrors, signBlock, scaleFit,
    binarizationRows, packSigns } = addon;
  return {
    bStep: pspBStep, residual: pspResidual, distance: rowSquaredDistance, weight: binaryLowRankWeight, subtract: subtractF32, blockErrors,
    signBlock, scaleFit, binarization: binarizationRows,
    packSigns: (signs, rows, cols) => {
      const out = new Uint32Array(rows * Math.ceil(cols / 32));
      packSigns(signs, rows, cols, out);
      return out;
    },
    transpose: (x, rows, cols) => {
      const out = new Float32Array(rows * cols);
      transposeF32(x, rows, cols, out);
      return out;
    },
  };
}
