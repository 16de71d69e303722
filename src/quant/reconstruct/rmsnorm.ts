/**
 * RMSNorm per row with a fixed weight w (LlamaRMSNorm): y = w ⊙ x · r, r = 1/√(mean(x²) + ε).
 * Backward (w fixed): with h = w ⊙ ∂L/∂y, ∂L/∂x = r·h − r³·x·(Σ_j h_j x_j)/n.
 */
import { alloc, type Arr } from './gemm.js';

export function rmsNormForward<T extends Arr>(x: T, rows: number, cols: number, w: Arr, eps: number): { y: T; inv: Float64Array } {
  const y = alloc(x, rows * cols);
  const inv = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[o + j]! * x[o + j]!;
    const ir = 1 / Math.sqrt(ss / cols + eps);
    inv[r] = ir;
    for (let j = 0; j < cols; j++) y[o + j] = w[j]! * x[o + j]! * ir;
  }
  return { y, inv };
}

export function rmsNormBackward<T extends Arr>(x: T, g: Arr, rows: number, cols: number, w: Arr, inv: Float64Array): T {
  const dx = alloc(x, rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const ir = inv[r]!;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += w[j]! * g[o + j]! * x[o + j]!;
    const c = (ir * ir * ir * dot) / cols;
    for (let j = 0; j < cols; j++) dx[o + j] = ir * w[j]! * g[o + j]! - c * x[o + j]!;
  }
  return dx;
}
