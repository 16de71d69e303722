/**
 * ARB-LLM_RC (Li et al., 2024, arXiv 2410.03129; ICLR 2025): the variant the paper reports as its main result,
 * ARB-RC (alternating refined binarization with row and column scales) with the column-group bitmap (CGB),
 * in BiLLM's block frame (docs/ALGORITHMS.md §ARB-LLM). Per block of columns:
 *
 *   salient columns S     as BiLLM (src/quant/billm.ts: Hessian saliency, count search with the two-plane proxy)
 *   CGB                   S is split too: break point p_s among the quantiles of |w| over S, R₂ proxy on both parts;
 *                         ¬S at p among the quantiles of |w| over ¬S, R₁ proxy (as BiLLM) → four regions
 *   ARB-RC on a region M  Ŵ = Σ_k diag(a_k) B_k diag(c_k) on M (no mean), k < order (2 on S, 1 on ¬S):
 *     init                a_i = mean_{j∈M_i} |r_ij|, c_j = mean_{i∈M^j, a_i>0} |r_ij| / a_i, B = sign⁺(r), r ← r − a c B
 *     T refinements       for each plane k, with W̃ = W − (the other plane):
 *                           a_k,i = Σ_j c_k,j B_ij W̃_ij / Σ_j c_k,j²      (least squares in a_k)
 *                           c_k,j = Σ_i a_k,i B_ij W̃_ij / Σ_i a_k,i²      (least squares in c_k)
 *                         order 2: B ← argmin over (b₀, b₁) ∈ {±1}² of |w − b₀a₀c₀ − b₁a₁c₁| per element
 *                         (order 1 keeps B = sign⁺(w))
 *   Every step minimises ‖W − Ŵ‖² over M in its own variables, so the error never rises.
 */
import type { Matmul } from '../linalg/matmul.js';
import { compensateColumnBlocks, type CompensationFrame } from './column-blocks.js';
import { BILLM_DEFAULTS, salientColumnOrder, searchBreakPoint, searchSalientColumns, type BillmOptions, type BinaryStructureStats } from './billm.js';

export interface ArbOptions extends BillmOptions {
  /** ARB-RC refinement rounds T (ARB-LLM: 15) */
  iterations: number;
}

export const ARB_DEFAULTS: Readonly<ArbOptions> = { ...BILLM_DEFAULTS, iterations: 15 };

/** ARB-RC of region `mask` of w [rows, cols] with `order` planes and T refinements; 0 outside the region. */
export function rcBinarize(w: Float64Array, mask: Uint8Array, rows: number, cols: number, order: 1 | 2, iterations: number): Float64Array {
  const a: Float64Array[] = [];
  const c: Float64Array[] = [];
  const b: Int8Array[] = [];
  const residual = new Float64Array(rows * cols);
  for (let i = 0; i < residual.length; i++) if (mask[i] === 1) residual[i] = w[i]!;
  for (let k = 0; k < order; k++) {
    const ak = new Float64Array(rows);
    const ck = new Float64Array(cols);
    const bk = new Int8Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      let n = 0;
      for (let j = 0; j < cols; j++) if (mask[r * cols + j] === 1) { s += Math.abs(residual[r * cols + j]!); n++; }
      ak[r] = n > 0 ? s / n : 0;
    }
    for (let j = 0; j < cols; j++) {
      let s = 0;
      let n = 0;
      for (let r = 0; r < rows; r++) if (mask[r * cols + j] === 1 && ak[r]! > 0) { s += Math.abs(residual[r * cols + j]!) / ak[r]!; n++; }
      ck[j] = n > 0 ? s / n : 0;
    }
    for (let i = 0; i < residual.length; i++) {
      if (mask[i] !== 1) continue;
      bk[i] = residual[i]! >= 0 ? 1 : -1;
      residual[i] = residual[i]! - ak[Math.floor(i / cols)]! * ck[i % cols]! * bk[i]!;
    }
    a.push(ak);
    c.push(ck);
    b.push(bk);
  }
  const target = new Float64Array(rows * cols);
  for (let t = 0; t < iterations; t++) {
    for (let k = 0; k < order; k++) {
      // W̃ = W − the other plane, on the region
      for (let i = 0; i < target.length; i++) {
        if (mask[i] !== 1) continue;
        let v = w[i]!;
        if (order === 2) {
          const o = 1 - k;
          v -= a[o]![Math.floor(i / cols)]! * c[o]![i % cols]! * b[o]![i]!;
        }
        target[i] = v;
      }
      refineRowScales(target, mask, rows, cols, a[k]!, c[k]!, b[k]!);
      refineColumnScales(target, mask, rows, cols, a[k]!, c[k]!, b[k]!);
    }
    if (order === 2) updateSignPairs(w, mask, rows, cols, a, c, b);
  }
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < out.length; i++) {
    if (mask[i] !== 1) continue;
    const r = Math.floor(i / cols);
    const j = i % cols;
    let v = 0;
    for (let k = 0; k < order; k++) v += a[k]![r]! * c[k]![j]! * b[k]![i]!;
    out[i] = v;
  }
  return out;
}

function refineRowScales(t: Float64Array, mask: Uint8Array, rows: number, cols: number, a: Float64Array, c: Float64Array, b: Int8Array): void {
  for (let r = 0; r < rows; r++) {
    let num = 0;
    let den = 0;
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      if (mask[i] !== 1) continue;
      num += c[j]! * b[i]! * t[i]!;
      den += c[j]! * c[j]!;
    }
    a[r] = den > 0 ? num / den : 0;
  }
}

function refineColumnScales(t: Float64Array, mask: Uint8Array, rows: number, cols: number, a: Float64Array, c: Float64Array, b: Int8Array): void {
  const num = new Float64Array(cols);
  const den = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const ar = a[r]!;
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      if (mask[i] !== 1) continue;
      num[j] = num[j]! + ar * b[i]! * t[i]!;
      den[j] = den[j]! + ar * ar;
    }
  }
  for (let j = 0; j < cols; j++) c[j] = den[j]! > 0 ? num[j]! / den[j]! : 0;
}

/** Two planes: per element the sign pair (b₀, b₁) closest to w, tried in the order (−,−), (−,+), (+,−), (+,+). */
function updateSignPairs(w: Float64Array, mask: Uint8Array, rows: number, cols: number, a: Float64Array[], c: Float64Array[], b: Int8Array[]): void {
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      if (mask[i] !== 1) continue;
      const s0 = a[0]![r]! * c[0]![j]!;
      const s1 = a[1]![r]! * c[1]![j]!;
      let best = Infinity;
      let b0 = 1;
      let b1 = 1;
      for (const [x0, x1] of [[-1, -1], [-1, 1], [1, -1], [1, 1]] as const) {
        const d = Math.abs(w[i]! - x0 * s0 - x1 * s1);
        if (d < best) {
          best = d;
          b0 = x0;
          b1 = x1;
        }
      }
      b[0]![i] = b0;
      b[1]![i] = b1;
    }
  }
}

/** ARB-LLM_RC's binarization of one block (no error compensation; quantizeArb adds it). */
export function arbBlock(block: Float64Array, rows: number, width: number, inverseDiag: Float64Array, start: number, options: ArbOptions,
  stats?: BinaryStructureStats): Float64Array {
  const order = salientColumnOrder(block, rows, width, inverseDiag, start);
  const salient = searchSalientColumns(block, rows, width, order, options.maxSalient);
  if (stats !== undefined) for (let j = 0; j < width; j++) stats.salientColumns += salient[j]!;
  const regions: Array<{ mask: Uint8Array; order: 1 | 2 }> = [];
  const salientSplit = searchBreakPoint(block, salient, rows, width, 2);
  if (salientSplit !== undefined) regions.push({ mask: salientSplit.sparse, order: 2 }, { mask: salientSplit.concentrated, order: 2 });
  const rest = searchBreakPoint(block, salient.map((v) => 1 - v), rows, width, 1);
  if (rest !== undefined) regions.push({ mask: rest.sparse, order: 1 }, { mask: rest.concentrated, order: 1 });
  const q = new Float64Array(rows * width);
  for (const region of regions) {
    const part = rcBinarize(block, region.mask, rows, width, region.order, options.iterations);
    for (let i = 0; i < q.length; i++) q[i] = q[i]! + part[i]!;
  }
  return q;
}

/** ARB-LLM_RC on W [rows, cols] in the column-block frame of its inputs' damped Hessian (src/quant/column-blocks.ts,
 *  products through `mm`); the quantized weight and its structure. */
export async function quantizeArb(w: Float32Array, rows: number, cols: number, frame: CompensationFrame, options: ArbOptions = ARB_DEFAULTS,
  mm: Matmul): Promise<{ weight: Float32Array; stats: BinaryStructureStats }> {
  const stats: BinaryStructureStats = { salientColumns: 0 };
  const weight = await compensateColumnBlocks(w, rows, cols, frame, options.blockSize,
    (block, r, width, start) => Float32Array.from(arbBlock(Float64Array.from(block), r, width, frame.inverseDiag, start, options, stats)), mm);
  return { weight, stats };
}
