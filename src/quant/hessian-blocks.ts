/**
 * The column-block frame BiLLM and ARB-LLM quantize in (docs/ALGORITHMS.md §BiLLM): the layer Hessian of
 * the calibration inputs, damped, and the block-wise error compensation of GPTQ as BiLLM applies it.
 *
 *   H  = (2/n) XᵀX                          X: n calibration rows [n, cols]
 *   dead columns (H_jj = 0): H_jj ← 1, W[:, j] ← 0
 *   H ← H + λI,  λ = percdamp · mean(diag H)
 *   U  = upper Cholesky factor of H⁻¹      (H⁻¹ = UᵀU)
 *   for each block b = [b0, b1) of `blockSize` columns, left to right:
 *     Q_b = quantizeBlock(W[:, b])                        (the method's binarization of the whole block)
 *     E_b = (W[:, b] − Q_b) · diag(U_bb)⁻¹
 *     W[:, b1:] ← W[:, b1:] − E_b · U[b, b1:]             (the later columns absorb the block's error)
 *
 * As in BiLLM, the block is binarized at once (its columns are not updated one by one inside the block).
 */
import type { Matmul } from '../linalg/matmul.js';
import { upperCholeskyOfInverse } from '../linalg/cholesky.js';

export interface PreparedHessian {
  cols: number;
  /** U, upper triangular, H⁻¹ = UᵀU (damped H) */
  u: Float64Array;
  /** diag(H⁻¹) of the damped H */
  inverseDiag: Float64Array;
  /** 1 for a column whose H_jj was 0 (no calibration signal) */
  dead: Uint8Array;
}

/** H = (2/n) XᵀX of calibration rows x [tokens, cols]. */
export async function inputHessian(x: Float32Array, tokens: number, cols: number, mm: Matmul): Promise<Float64Array> {
  if (x.length !== tokens * cols) throw new Error(`inputHessian: ${x.length} elements for [${tokens}, ${cols}]`);
  const product = await mm(x, x, cols, tokens, cols, { transposeA: true });
  const f = tokens > 0 ? 2 / tokens : 0;
  const h = new Float64Array(cols * cols);
  for (let i = 0; i < h.length; i++) h[i] = product[i]! * f;
  return h;
}

/** Dead columns, damping λ = percdamp · mean(diag H), then U and diag(H⁻¹). `h` is not modified. */
export function prepareHessian(h: Float64Array, cols: number, percdamp: number): PreparedHessian {
  const hd = Float64Array.from(h);
  const dead = new Uint8Array(cols);
  for (let j = 0; j < cols; j++) {
    if (hd[j * cols + j] === 0) {
      dead[j] = 1;
      hd[j * cols + j] = 1;
    }
  }
  let mean = 0;
  for (let j = 0; j < cols; j++) mean += hd[j * cols + j]! / cols;
  const damp = percdamp * mean;
  for (let j = 0; j < cols; j++) hd[j * cols + j] = hd[j * cols + j]! + damp;
  const { u, inverse } = upperCholeskyOfInverse(hd, cols);
  const inverseDiag = new Float64Array(cols);
  for (let j = 0; j < cols; j++) inverseDiag[j] = inverse[j * cols + j]!;
  return { cols, u, inverseDiag, dead };
}

/** What the method does with one block: its quantized values [rows, width] for the block's weights [rows, width]. */
export type BlockQuantizer = (block: Float64Array, rows: number, width: number, start: number) => Float64Array;

/** Runs the block frame over W [rows, cols] (not modified); returns the quantized weight Q [rows, cols]. */
export function quantizeColumnBlocks(w: Float32Array | Float64Array, rows: number, cols: number, hessian: PreparedHessian,
  blockSize: number, quantizeBlock: BlockQuantizer): Float64Array {
  if (w.length !== rows * cols) throw new Error(`quantizeColumnBlocks: ${w.length} elements for [${rows}, ${cols}]`);
  if (hessian.cols !== cols) throw new Error(`quantizeColumnBlocks: Hessian of ${hessian.cols} columns for ${cols}`);
  if (!(blockSize >= 1)) throw new Error(`quantizeColumnBlocks: block size ${blockSize}`);
  const work = Float64Array.from(w);
  for (let j = 0; j < cols; j++) if (hessian.dead[j] === 1) for (let r = 0; r < rows; r++) work[r * cols + j] = 0;
  const q = new Float64Array(rows * cols);
  const { u } = hessian;
  for (let b0 = 0; b0 < cols; b0 += blockSize) {
    const b1 = Math.min(cols, b0 + blockSize);
    const width = b1 - b0;
    const block = new Float64Array(rows * width);
    for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) block[r * width + c] = work[r * cols + b0 + c]!;
    const qb = quantizeBlock(block, rows, width, b0);
    const err = new Float64Array(rows * width);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < width; c++) {
        const v = qb[r * width + c]!;
        q[r * cols + b0 + c] = v;
        err[r * width + c] = (block[r * width + c]! - v) / u[(b0 + c) * cols + b0 + c]!;
      }
    }
    if (b1 === cols) continue;
    // W[:, b1:] −= E_b · U[b0:b1, b1:]
    for (let r = 0; r < rows; r++) {
      const row = r * cols;
      for (let c = 0; c < width; c++) {
        const e = err[r * width + c]!;
        if (e === 0) continue;
        const urow = (b0 + c) * cols;
        for (let j = b1; j < cols; j++) work[row + j] = work[row + j]! - e * u[urow + j]!;
      }
    }
  }
  return q;
}
