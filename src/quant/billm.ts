/**
 * BiLLM (Huang et al., 2024, arXiv 2402.04291): 1-bit post-training quantization of one linear weight
 * W [rows, cols] with its layer Hessian (docs/ALGORITHMS.md §BiLLM). Per block of columns (the frame of src/quant/column-blocks.ts; float64 reference src/quant/hessian-blocks.ts):
 *
 *   saliency      s_ij = w_ij² / [H⁻¹]_jj²,  column score c_j = Σ_i s_ij; columns ranked by c_j (descending)
 *   salient       the top k columns S, k ∈ 1..min(maxSalient − 1, width − 1) minimising
 *                 ‖W_b − R₂(W_b|S) − R₂(W_b|¬S)‖²  (¬S in second order too: the search proxy of BiLLM)
 *   residual      R₂ on S: two planes, each the binarization below of what the previous left
 *   bell split    break point p among the quantiles 0.10, 0.11, …, 0.90 of |w| over ¬S:
 *                 sparse = ¬S ∧ |w| ≥ p, concentrated = ¬S ∧ |w| < p, each R₁ with its own scales;
 *                 p minimises the block error ‖W_b − R₂(W_b|S) − R₁(sparse) − R₁(concentrated)‖²
 *   binarization  on a region M, row by row (μ, α per row over the row's elements in M):
 *                 μ = mean(r), α = mean|r − μ|, r̂ = α·sign⁺(r − μ) + μ   (BiLLM's released binarizer)
 *   Rₖ            k rounds of that binarization on the residual; R₁ is one plane
 */
import type { Matmul } from '../linalg/matmul.js';
import { compensateColumnBlocks, type CompensationFrame } from './column-blocks.js';

export interface BillmOptions {
  /** columns per block of the error-compensation frame (BiLLM: 128) */
  blockSize: number;
  /** salient-column search bound: k < maxSalient (BiLLM: 50) */
  maxSalient: number;
  /** Hessian damping as a fraction of mean(diag H) (BiLLM: 0.01) */
  percdamp: number;
}

export const BILLM_DEFAULTS: Readonly<BillmOptions> = { blockSize: 128, maxSalient: 50, percdamp: 0.01 };

/** The 81 break-point quantile levels 0.10, 0.11, …, 0.90. */
export const BREAK_QUANTILES: readonly number[] = Array.from({ length: 81 }, (_, t) => (10 + t) / 100);

/**
 * Rₖ on region `mask` of w [rows, cols]: k rounds of the per-row mean-shifted sign binarization of the
 * residual; the approximation, 0 outside the region.
 */
export function residualBinarize(w: Float64Array, mask: Uint8Array, rows: number, cols: number, order: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let n = 0;
    for (let c = 0; c < cols; c++) n += mask[o + c]!;
    if (n === 0) continue;
    for (let k = 0; k < order; k++) {
      let mu = 0;
      for (let c = 0; c < cols; c++) if (mask[o + c] === 1) mu += w[o + c]! - out[o + c]!;
      mu /= n;
      let alpha = 0;
      for (let c = 0; c < cols; c++) if (mask[o + c] === 1) alpha += Math.abs(w[o + c]! - out[o + c]! - mu);
      alpha /= n;
      for (let c = 0; c < cols; c++) {
        if (mask[o + c] !== 1) continue;
        const v = w[o + c]! - out[o + c]! - mu;
        out[o + c] = out[o + c]! + (v >= 0 ? alpha : -alpha) + mu;
      }
    }
  }
  return out;
}

/** Σ over the region of (w − approx)². */
export function regionError(w: Float64Array, approx: Float64Array, mask: Uint8Array): number {
  let e = 0;
  for (let i = 0; i < w.length; i++) if (mask[i] === 1) e += (w[i]! - approx[i]!) ** 2;
  return e;
}

/** Column indices of a block by saliency score Σ_i w_ij² / d_j² (descending; ties by index). */
export function salientColumnOrder(block: Float64Array, rows: number, width: number, inverseDiag: Float64Array, start: number): number[] {
  const score = new Float64Array(width);
  for (let c = 0; c < width; c++) {
    const d = inverseDiag[start + c]!;
    let s = 0;
    for (let r = 0; r < rows; r++) s += block[r * width + c]! ** 2;
    score[c] = s / (d * d);
  }
  return Array.from({ length: width }, (_, c) => c).sort((a, b) => score[b]! - score[a]! || a - b);
}

function columnMask(rows: number, width: number, columns: readonly number[]): Uint8Array {
  const m = new Uint8Array(rows * width);
  for (const c of columns) for (let r = 0; r < rows; r++) m[r * width + c] = 1;
  return m;
}

function complement(mask: Uint8Array): Uint8Array {
  return mask.map((v) => 1 - v);
}

/** The salient columns S: the top-k of `order` with k minimising the two-plane proxy error (see the module header). */
export function searchSalientColumns(block: Float64Array, rows: number, width: number, order: readonly number[], maxSalient: number): Uint8Array {
  const kMax = Math.min(maxSalient - 1, width - 1);
  if (kMax < 1) return new Uint8Array(rows * width);
  let best = Infinity;
  let bestK = 1;
  for (let k = 1; k <= kMax; k++) {
    const s = columnMask(rows, width, order.slice(0, k));
    const ns = complement(s);
    const approx = residualBinarize(block, s, rows, width, 2);
    const rest = residualBinarize(block, ns, rows, width, 2);
    for (let i = 0; i < approx.length; i++) approx[i] = approx[i]! + rest[i]!;
    const err = regionError(block, approx, new Uint8Array(rows * width).fill(1));
    if (err < best) {
      best = err;
      bestK = k;
    }
  }
  return columnMask(rows, width, order.slice(0, bestK));
}

/** numpy.quantile (linear interpolation) of ascending-sorted values at level q. */
export function sortedQuantile(sorted: Float64Array, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export interface BreakSplit {
  /** break point p (|w| ≥ p: sparse) */
  p: number;
  sparse: Uint8Array;
  concentrated: Uint8Array;
  /** region error of the chosen split with the search binarizer */
  error: number;
}

/**
 * Bell-shaped split of `region` at the break point p among BREAK_QUANTILES of its |w| that minimises the region's
 * error when sparse (|w| ≥ p) and concentrated (|w| < p) are binarized separately by Rₖ (k = `order`).
 */
export function searchBreakPoint(block: Float64Array, region: Uint8Array, rows: number, width: number, order: number): BreakSplit | undefined {
  const values: number[] = [];
  for (let i = 0; i < region.length; i++) if (region[i] === 1) values.push(Math.abs(block[i]!));
  if (values.length === 0) return undefined;
  const sorted = Float64Array.from(values).sort();
  let best: BreakSplit | undefined;
  for (const q of BREAK_QUANTILES) {
    const p = sortedQuantile(sorted, q);
    const sparse = new Uint8Array(region.length);
    const concentrated = new Uint8Array(region.length);
    for (let i = 0; i < region.length; i++) {
      if (region[i] !== 1) continue;
      if (Math.abs(block[i]!) >= p) sparse[i] = 1;
      else concentrated[i] = 1;
    }
    const a = residualBinarize(block, sparse, rows, width, order);
    const b = residualBinarize(block, concentrated, rows, width, order);
    for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
    const error = regionError(block, a, region);
    if (best === undefined || error < best.error) best = { p, sparse, concentrated, error };
  }
  return best;
}

export interface BinaryStructureStats {
  /** salient columns over all blocks */
  salientColumns: number;
}

/** BiLLM's binarization of one block (no error compensation; quantizeBillm adds it). */
export function billmBlock(block: Float64Array, rows: number, width: number, inverseDiag: Float64Array, start: number, maxSalient: number,
  stats?: BinaryStructureStats): Float64Array {
  const order = salientColumnOrder(block, rows, width, inverseDiag, start);
  const salient = searchSalientColumns(block, rows, width, order, maxSalient);
  if (stats !== undefined) for (let c = 0; c < width; c++) stats.salientColumns += salient[c]!;
  const q = residualBinarize(block, salient, rows, width, 2);
  const split = searchBreakPoint(block, complement(salient), rows, width, 1);
  if (split !== undefined) {
    const a = residualBinarize(block, split.sparse, rows, width, 1);
    const b = residualBinarize(block, split.concentrated, rows, width, 1);
    for (let i = 0; i < q.length; i++) q[i] = q[i]! + a[i]! + b[i]!;
  }
  return q;
}

/** BiLLM on W [rows, cols] in the column-block frame of its inputs' damped Hessian (src/quant/column-blocks.ts,
 *  products through `mm`); the quantized weight and its structure. */
export async function quantizeBillm(w: Float32Array, rows: number, cols: number, frame: CompensationFrame, options: BillmOptions = BILLM_DEFAULTS,
  mm: Matmul): Promise<{ weight: Float32Array; stats: BinaryStructureStats }> {
  const stats: BinaryStructureStats = { salientColumns: 0 };
  const weight = await compensateColumnBlocks(w, rows, cols, frame, options.blockSize,
    (block, r, width, start) => Float32Array.from(billmBlock(Float64Array.from(block), r, width, frame.inverseDiag, start, options.maxSalient, stats)), mm);
  return { weight, stats };
}
