/**
 * The probs quantizer of causal attention, row by row (AttentionRecipe.probsRow, src/quant/recipe.ts):
 *
 *   'unmasked': query i sees keys lo_i … i (lo_i = max(0, i − window + 1) with a sliding window, else 0); the
 *               quantizer runs on those n_i = i − lo_i + 1 entries alone, so Δ = t · (Σ_j p_ij) / n_i = t / n_i;
 *               the masked entries stay 0.
 *   'window':   the quantizer runs on the whole row of length S, masked zeros included (Δ = t / S), as the
 *               recipes written before issue #16.
 *
 * The JS reference of every implementation (ONNX graph, native runtime, calibration, reconstruction): each takes
 * the row statistics in the same float32 order as src/quant/quantizers.ts.
 */
import type { ActivationQuantizer, ProbsRow } from './recipe.js';
import { quantizeRowsInto } from './quantizers.js';

/** First key query position i sees: keys with i − j ≥ slidingWindow are masked (undefined or 0: plain causal). */
export function firstVisibleKey(i: number, slidingWindow: number | undefined): number {
  return slidingWindow === undefined || slidingWindow <= 0 ? 0 : Math.max(0, i - slidingWindow + 1);
}

/**
 * Quantizes probability rows p [rows, seq]; row r is query position `positionOf(r)` (keys 0 … seq − 1), its
 * masked entries 0. Returns a new array.
 */
export function quantizeProbRows(p: Float32Array, seq: number, q: ActivationQuantizer, row: ProbsRow | undefined,
  slidingWindow: number | undefined, positionOf: (r: number) => number = (r) => r % seq): Float32Array {
  const out = new Float32Array(p.length);
  if (row !== 'unmasked') {
    quantizeRowsInto(p, seq, q, out);
    return out;
  }
  if (q.kind === 'binary') throw new Error('a binary probs quantizer is not defined over the unmasked keys');
  const rows = p.length / seq;
  for (let r = 0; r < rows; r++) {
    const i = positionOf(r);
    if (!(i >= 0 && i < seq)) throw new Error(`probability row ${r} is query position ${i}, outside [0, ${seq})`);
    const a = r * seq + firstVisibleKey(i, slidingWindow);
    const b = r * seq + i + 1;
    quantizeRowsInto(p.subarray(a, b), b - a, q, out.subarray(a, b));
  }
  return out;
}
