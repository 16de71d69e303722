/**
 * Row-wise weight binarization: W[n, :] ≈ α_n · sign⁺(W[n, :]) with α_n = mean_k |W[n, k]|,
 * the closed-form minimiser of ‖w − α b‖² over α for b = sign(w) (XNOR-Net / BWTA / BWLA).
 * sign⁺ maps 0 to +1 (same convention as the recipe's binary quantizer).
 */

export function binarizeRows(w: Float32Array | Float64Array, rows: number, cols: number): { signs: Int8Array; scales: Float32Array } {
  if (w.length !== rows * cols) throw new Error(`binarizeRows: ${w.length} elements for [${rows}, ${cols}]`);
  const signs = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let sumAbs = 0;
    for (let c = 0; c < cols; c++) {
      const v = w[o + c]!;
      signs[o + c] = v >= 0 ? 1 : -1;
      sumAbs += Math.abs(v);
    }
    scales[r] = sumAbs / cols;
  }
  return { signs, scales };
}

/** diag(scales)·signs as dense floats [rows, cols] (Float64). */
export function dequantizeBinary(signs: Int8Array, scales: Float32Array | Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let c = 0; c < cols; c++) out[r * cols + c] = s * signs[r * cols + c]!;
  }
  return out;
}

/** Row r of W [·, cols]: ‖w_r − α sign(w_r)‖² with the optimal α = mean|w_r| (= ‖w_r‖² − K·α²), and ‖w_r‖². */
export function rowBinarization(w: Float32Array | Float64Array, r: number, cols: number): { err: number; energy: number } {
  const o = r * cols;
  let sumAbs = 0;
  let sumSq = 0;
  for (let c = 0; c < cols; c++) {
    const v = w[o + c]!;
    sumAbs += Math.abs(v);
    sumSq += v * v;
  }
  const alpha = sumAbs / cols;
  return { err: Math.max(0, sumSq - cols * alpha * alpha), energy: sumSq };
}

/** ‖W − diag(α)·sign(W)‖_F² with the row-wise optimal α (= Σ‖w_n‖² − K·Σ α_n²). */
export function binarizationError(w: Float32Array | Float64Array, rows: number, cols: number): number {
  let err = 0;
  for (let r = 0; r < rows; r++) err += rowBinarization(w, r, cols).err;
  return err;
}
