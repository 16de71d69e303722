/**
 * BiLLM's column-block error compensation (the frame of src/quant/hessian-blocks.ts, its float64 reference) with
 * the O(n³) and O(rows·n²) work in Matmul products (docs/ALGORITHMS.md §Sign compensation), for weights
 * W [rows, n] acting on inputs with Gram H:
 *
 *   dead columns (H_jj = 0): H_jj ← 1, W[:, j] ← 0
 *   H ← H + λI, λ = damping · mean(diag H);  U upper, H⁻¹ = UᵀU      (src/linalg/blocked-cholesky.ts)
 *   for each block b = [b0, b1) of columns, left to right, F = [b1, n):
 *     Q_b = quantizeBlock(W[:, b])                                    (the whole block at once)
 *     E_b = (W[:, b] − Q_b) · diag(U_bb)⁻¹
 *     W[:, F] ← W[:, F] − E_b · U[b, F]
 *
 * For blocks of one column this is GPTQ. (The exact least-squares update for a block fixed at once uses the
 * block's whole triangle, E_b = e_b U_bb⁻¹; on the bundled model BWLA measured 204.9 with it against 204.0 with the
 * diagonal, docs/ALGORITHMS.md, so the frame stays BiLLM's.) The updates are linear, so they are deferred as in
 * GPTQ: inside a span of SPAN columns a block receives the updates of the span's earlier blocks in one product just
 * before it is quantized; the span's errors update the rest of the matrix in one product. W is held transposed so
 * that every update is a contiguous slice.
 */
import { withKeptUpdated, type Matmul } from '../linalg/matmul.js';
import { copyBlock } from '../linalg/dense.js';
import { jsWeightPasses, type WeightPasses } from './weight-passes.js';
import { upperCholeskyOfInverseGemm } from '../linalg/blocked-cholesky.js';

/** columns whose block updates are deferred into one product for the rest of the matrix */
const SPAN = 1024;

export interface CompensationFrame {
  cols: number;
  /** U [cols, cols], upper, H⁻¹ = UᵀU (damped H) */
  u: Float32Array;
  /** diag(H⁻¹) of the damped H (Σ_i U_ij²): BiLLM's and ARB's salience */
  inverseDiag: Float64Array;
  /** 1 for a column whose H_jj was 0 (no calibration signal) */
  dead: Uint8Array;
}

/** Dead columns, then H + λI with λ = damping · mean(diag H), factored; undefined when no column has a signal. */
export async function compensationFrame(h: Float32Array | Float64Array, cols: number, damping: number, mm: Matmul): Promise<CompensationFrame | undefined> {
  if (h.length !== cols * cols) throw new Error(`compensationFrame: ${h.length} elements for [${cols}, ${cols}]`);
  const damped = Float32Array.from(h);
  const dead = new Uint8Array(cols);
  let live = 0;
  for (let j = 0; j < cols; j++) {
    if (damped[j * cols + j] === 0) {
      dead[j] = 1;
      damped[j * cols + j] = 1;
    } else live++;
  }
  if (live === 0) return undefined;
  let mean = 0;
  for (let j = 0; j < cols; j++) mean += damped[j * cols + j]! / cols;
  for (let j = 0; j < cols; j++) damped[j * cols + j] = damped[j * cols + j]! + damping * mean;
  const u = await upperCholeskyOfInverseGemm(damped, cols, mm);
  const inverseDiag = new Float64Array(cols);
  for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) inverseDiag[j] = inverseDiag[j]! + u[i * cols + j]! ** 2;
  return { cols, u, inverseDiag, dead };
}

/** What a method does with one block: its quantized values [rows, width] for the block's weights [rows, width]. */
export type BlockQuantizerF32 = (block: Float32Array, rows: number, width: number, start: number) => Float32Array;

/** Runs the frame over W [rows, cols] (not modified); returns Q [rows, cols]. */
export async function compensateColumnBlocks(w: Float32Array, rows: number, cols: number, frame: CompensationFrame, blockSize: number,
  quantizeBlock: BlockQuantizerF32, mm: Matmul, passes: WeightPasses = jsWeightPasses): Promise<Float32Array> {
  if (w.length !== rows * cols) throw new Error(`compensateColumnBlocks: ${w.length} elements for [${rows}, ${cols}]`);
  if (frame.cols !== cols) throw new Error(`compensateColumnBlocks: frame of ${frame.cols} columns for ${cols}`);
  if (!(blockSize >= 1)) throw new Error(`compensateColumnBlocks: block size ${blockSize}`);
  const { u } = frame;
  const wt = passes.transpose(w, rows, cols); // [cols, rows]: W[:, j] is row j
  for (let j = 0; j < cols; j++) if (frame.dead[j] === 1) wt.fill(0, j * rows, (j + 1) * rows);
  const q = new Float32Array(rows * cols);
  const span = Math.max(1, Math.round(SPAN / blockSize)) * blockSize;
  const diag = new Float64Array(blockSize);
  // E_b of a span's blocks, transposed [s1 − s0, rows]: the operand of every update, kept on the products' device
  // (Matmul.keep) with each block's errors copied there once
  const errors = new Float32Array(Math.min(span, cols) * rows);
  // the updates' products, one scratch for all (Matmul's `into`)
  const updates = new Float32Array(Math.max(Math.min(span, cols), cols - span) * rows);
  await withKeptUpdated(mm, errors, async (updateErrors) => {
    for (let s0 = 0; s0 < cols; s0 += span) {
      const s1 = Math.min(cols, s0 + span);
      const spanErrors = errors.subarray(0, (s1 - s0) * rows);
      for (let b0 = s0; b0 < s1; b0 += blockSize) {
        const b1 = Math.min(s1, b0 + blockSize);
        const width = b1 - b0;
        const blockT = wt.subarray(b0 * rows, b1 * rows); // [width, rows]
        // the span's earlier blocks' updates of this block, in one product (left-looking: only the block is written)
        if (b0 > s0) {
          const upd = await mm(copyBlock(u, cols, s0, b0, b0, b1), spanErrors.subarray(0, (b0 - s0) * rows), width, b0 - s0, rows, { transposeA: true, into: updates });
          passes.subtract(blockT, upd, blockT.length);
        }
        const qb = quantizeBlock(passes.transpose(blockT, width, rows), rows, width, b0); // [rows, width]
        // E_bᵀ = diag(U_bb)⁻¹ e_bᵀ, e_b = W[:, b] − Q_b (rounded to float32 before the division)
        const eT = spanErrors.subarray((b0 - s0) * rows, (b1 - s0) * rows);
        for (let c = 0; c < width; c++) diag[c] = u[(b0 + c) * cols + b0 + c]!;
        passes.blockErrors(blockT, qb, diag, rows, width, q.subarray(b0), cols, eT);
        updateErrors((b0 - s0) * rows, width * rows);
      }
      if (s1 < cols) {
        const upd = await mm(copyBlock(u, cols, s0, s1, s1, cols), spanErrors, cols - s1, s1 - s0, rows, { transposeA: true, into: updates });
        const dst = wt.subarray(s1 * rows);
        passes.subtract(dst, upd, dst.length);
      }
    }
  });
  return q;
}
