/**
 * Post-training calibration of activation quantizers by grid search on calibration statistics
 * (docs/ALGORITHMS.md §Activation calibration). Every search minimises an OUTPUT error:
 *
 *   linear inputs:   Σ_l ‖X W_lᵀ − Q(X) Ŵ_lᵀ‖_F²   over the linears l that share the input X
 *                    (X: sampled calibration tokens, already rotated for BWLA; Ŵ_l: quantized weight)
 *   Q·Kᵀ operands:   Σ_h ‖(Q_h K_hᵀ − Q̂_h K̂_hᵀ) ⊙ causal‖²  (sampled query rows, all keys)
 *   P·V operands:    Σ_h ‖P_h V_h − P̂_h V̂_h‖²               (sampled query rows; P̂ quantized over each
 *                                                             row's unmasked keys, src/quant/attention-probs.ts)
 */
import { jsMatmul, withKept, type Matmul } from '../linalg/matmul.js';
import { quantizeProbRows } from './attention-probs.js';
import type { ActivationQuantizer, ProbsRow } from './recipe.js';
import { quantizeRows, quantizeRowsInto, type QuantizeRowsInto } from './quantizers.js';

export const INT_CLIP_GRID: readonly number[] = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];
export const TERNARY_GRID: readonly number[] = [0, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1, 1.3, 1.5, 1.75, 2, 2.5, 3];

export interface LinearTarget {
  /** quantized (simulated) weight [rows, cols] */
  weight: Float32Array;
  rows: number;
  /** float reference output X Wᵀ [tokens, rows] */
  reference: Float32Array;
}

export interface SearchResult {
  quantizer: ActivationQuantizer;
  /** output squared error of the chosen quantizer */
  error: number;
  /** Σ ‖reference‖² (to report relative errors) */
  referenceEnergy: number;
  /** error of every grid point, in grid order */
  curve: Array<{ value: number; error: number }>;
}

export function candidateQuantizers(kind: 'int' | 'ternary', bits: number, grid?: readonly number[]): Array<{ value: number; quantizer: ActivationQuantizer }> {
  if (kind === 'int') return (grid ?? INT_CLIP_GRID).map((c) => ({ value: c, quantizer: { kind: 'int', bits, clipRatio: c } }));
  return (grid ?? TERNARY_GRID).map((t) => ({ value: t, quantizer: { kind: 'ternary', thresholdRatio: t } }));
}

/** Output squared error Σ_l ‖ref_l − Q(X) Ŵ_lᵀ‖² for one quantizer. `quantize`: the row quantizer (the reference,
 *  or the engine's native one); `scratch`: buffers reused across calls, xq [tokens, cols] for Q(X) and
 *  out [tokens, max rows] for the products (Matmul's `into`). */
export async function linearOutputError(x: Float32Array, tokens: number, cols: number, q: ActivationQuantizer, targets: readonly LinearTarget[], mm: Matmul = jsMatmul,
  quantize: QuantizeRowsInto = quantizeRowsInto, scratch?: { xq: Float32Array; out: Float32Array }): Promise<number> {
  const xq = scratch?.xq ?? new Float32Array(x.length);
  quantize(x, cols, q, xq);
  let err = 0;
  for (const t of targets) {
    const y = await mm(xq, t.weight, tokens, cols, t.rows, { transposeB: true, ...(scratch === undefined ? {} : { into: scratch.out }) });
    for (let i = 0; i < y.length; i++) {
      const d = y[i]! - t.reference[i]!;
      err += d * d;
    }
  }
  return err;
}

export async function referenceOutputs(x: Float32Array, tokens: number, cols: number, floatWeights: ReadonlyArray<{ weight: Float32Array; rows: number }>, mm: Matmul = jsMatmul): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const w of floatWeights) out.push(await mm(x, w.weight, tokens, cols, w.rows, { transposeB: true }));
  return out;
}

export async function searchLinearQuantizer(
  x: Float32Array,
  tokens: number,
  cols: number,
  candidates: ReadonlyArray<{ value: number; quantizer: ActivationQuantizer }>,
  targets: readonly LinearTarget[],
  mm: Matmul = jsMatmul,
  quantize: QuantizeRowsInto = quantizeRowsInto,
): Promise<SearchResult> {
  let referenceEnergy = 0;
  for (const t of targets) for (let i = 0; i < t.reference.length; i++) referenceEnergy += t.reference[i]! ** 2;
  const curve: Array<{ value: number; error: number }> = [];
  let best = candidates[0]!;
  let bestErr = Infinity;
  // every candidate multiplies by the same weights: they stay on the products' device for the search (Matmul.keep)
  const scratch = { xq: new Float32Array(x.length), out: new Float32Array(tokens * Math.max(0, ...targets.map((t) => t.rows))) };
  await withKept(mm, targets.map((t) => t.weight), async () => {
    for (const c of candidates) {
      const e = await linearOutputError(x, tokens, cols, c.quantizer, targets, mm, quantize, scratch);
      curve.push({ value: c.value, error: e });
      if (e < bestErr) {
        bestErr = e;
        best = c;
      }
    }
  });
  return { quantizer: best.quantizer, error: bestErr, referenceEnergy, curve };
}

/** Attention operands of one calibration window, per head (taps of the block runner, batch 1). */
export interface AttentionSample {
  /** [heads, seq, headDim] */ query: Float32Array;
  /** [kvHeads, seq, headDim] */ key: Float32Array;
  /** [kvHeads, seq, headDim] */ value: Float32Array;
  /** [heads, seq, seq] softmax probabilities (rows sum to 1, causal zeros) */ probs: Float32Array;
  heads: number;
  kvHeads: number;
  seq: number;
  headDim: number;
  /** keys with i − j ≥ slidingWindow are masked; undefined = plain causal */
  slidingWindow: number | undefined;
  /** sampled query rows (ascending) used for the error */
  rows: Int32Array;
}

function gatherRows(src: Float32Array, blocks: number, rowsPerBlock: number, cols: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(blocks * rows.length * cols);
  for (let b = 0; b < blocks; b++)
    for (let i = 0; i < rows.length; i++)
      out.set(src.subarray((b * rowsPerBlock + rows[i]!) * cols, (b * rowsPerBlock + rows[i]! + 1) * cols), (b * rows.length + i) * cols);
  return out;
}

/** Σ_h ‖(A_h B_gᵀ − Â_h B̂_gᵀ)‖² over sampled rows (causal mask when `causal`). a: [heads, r, d], b: [kvHeads, n, d]. */
async function productError(
  mm: Matmul,
  aRef: Float32Array, bRef: Float32Array, aq: Float32Array, bq: Float32Array,
  heads: number, kvHeads: number, r: number, n: number, d: number, rowPos: Int32Array | undefined,
): Promise<number> {
  const group = heads / kvHeads;
  let err = 0;
  for (let h = 0; h < heads; h++) {
    const g = Math.floor(h / group);
    const A = aRef.subarray(h * r * d, (h + 1) * r * d);
    const Aq = aq.subarray(h * r * d, (h + 1) * r * d);
    const B = bRef.subarray(g * n * d, (g + 1) * n * d);
    const Bq = bq.subarray(g * n * d, (g + 1) * n * d);
    const y = await mm(A, B, r, d, n, { transposeB: true });
    const yq = await mm(Aq, Bq, r, d, n, { transposeB: true });
    for (let i = 0; i < r; i++) {
      const limit = rowPos === undefined ? n : rowPos[i]! + 1;
      for (let j = 0; j < limit; j++) {
        const dd = y[i * n + j]! - yq[i * n + j]!;
        err += dd * dd;
      }
    }
  }
  return err;
}

export interface AttentionSearchResult {
  query: ActivationQuantizer;
  key: ActivationQuantizer;
  value: ActivationQuantizer;
  probs: ActivationQuantizer;
  /** the rows the probs threshold is relative to: always the unmasked keys */
  probsRow: ProbsRow;
  /** relative errors of the chosen quantizers: scores (Q·Kᵀ) and context (P·V) */
  scoresRelError: number;
  contextRelError: number;
}

/** Ternary thresholds for Q, K (scores error) and V, P (context error), coordinate-wise. */
export async function searchAttentionTernary(s: AttentionSample, mm: Matmul = jsMatmul, grid: readonly number[] = TERNARY_GRID, probsGrid?: readonly number[]): Promise<AttentionSearchResult> {
  const { heads, kvHeads, seq, headDim: d, rows } = s;
  const r = rows.length;
  const qRows = gatherRows(s.query, heads, seq, d, rows);
  const pRows = gatherRows(s.probs, heads, seq, seq, rows);
  const tern = (t: number): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio: t });
  const energy = (aRef: Float32Array, bRef: Float32Array, n: number, dd: number, causal: boolean): Promise<number> =>
    productError(mm, aRef, bRef, new Float32Array(aRef.length), new Float32Array(bRef.length), heads, kvHeads, r, n, dd, causal ? rows : undefined);
  // scores = Q Kᵀ (r × seq per head); causal
  const scoresEnergy = await energy(qRows, s.key, seq, d, true);
  let bestQ = grid[0]!;
  let bestErr = Infinity;
  for (const t of grid) {
    const e = await productError(mm, qRows, s.key, quantizeRows(qRows, d, tern(t)), s.key, heads, kvHeads, r, seq, d, rows);
    if (e < bestErr) { bestErr = e; bestQ = t; }
  }
  const qHat = quantizeRows(qRows, d, tern(bestQ));
  let bestK = grid[0]!;
  bestErr = Infinity;
  for (const t of grid) {
    const e = await productError(mm, qRows, s.key, qHat, quantizeRows(s.key, d, tern(t)), heads, kvHeads, r, seq, d, rows);
    if (e < bestErr) { bestErr = e; bestK = t; }
  }
  const scoresErr = bestErr;
  // context = P V: P rows [heads, r, seq], V [kvHeads, seq, d] → need Vᵀ layout for productError (b: [kvHeads, n=d, seq])
  const vT = new Float32Array(s.value.length);
  for (let g = 0; g < kvHeads; g++)
    for (let t = 0; t < seq; t++) for (let c = 0; c < d; c++) vT[g * d * seq + c * seq + t] = s.value[g * seq * d + t * d + c]!;
  const transposeV = (v: Float32Array): Float32Array => {
    const out = new Float32Array(v.length);
    for (let g = 0; g < kvHeads; g++)
      for (let t = 0; t < seq; t++) for (let c = 0; c < d; c++) out[g * d * seq + c * seq + t] = v[g * seq * d + t * d + c]!;
    return out;
  };
  const contextEnergy = await productError(mm, pRows, vT, new Float32Array(pRows.length), new Float32Array(vT.length), heads, kvHeads, r, d, seq, undefined);
  let bestV = grid[0]!;
  bestErr = Infinity;
  for (const t of grid) {
    const vq = transposeV(quantizeRows(s.value, d, tern(t)));
    const e = await productError(mm, pRows, vT, pRows, vq, heads, kvHeads, r, d, seq, undefined);
    if (e < bestErr) { bestErr = e; bestV = t; }
  }
  const vHatT = transposeV(quantizeRows(s.value, d, tern(bestV)));
  const pg = probsGrid ?? defaultProbsGrid(seq);
  const positionOf = (row: number): number => rows[row % r]!;
  let bestP = pg[0]!;
  bestErr = Infinity;
  for (const t of pg) {
    const pq = quantizeProbRows(pRows, seq, tern(t), 'unmasked', s.slidingWindow, positionOf);
    const e = await productError(mm, pRows, vT, pq, vHatT, heads, kvHeads, r, d, seq, undefined);
    if (e < bestErr) { bestErr = e; bestP = t; }
  }
  return {
    query: tern(bestQ),
    key: tern(bestK),
    value: tern(bestV),
    probs: tern(bestP),
    probsRow: 'unmasked',
    scoresRelError: scoresEnergy > 0 ? scoresErr / scoresEnergy : 0,
    contextRelError: contextEnergy > 0 ? bestErr / contextEnergy : 0,
  };
}

/**
 * Over its n_i unmasked keys a softmax row has mean p = 1/n_i, so Δ = t/n_i: a key is kept when its probability
 * exceeds t times the uniform level over the keys the query sees (t ≥ n_i drops the row). Grid t = 2^k,
 * k = −1 … log2(S).
 */
export function defaultProbsGrid(seq: number): number[] {
  const grid: number[] = [0];
  for (let t = 0.5; t <= seq; t *= 2) grid.push(t);
  return grid;
}
