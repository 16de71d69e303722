/**
 * Proximal SVD Projection (BWLA): refine a binarized weight with a low-rank term by minimising ONE
 * fixed objective per layer (docs/ALGORITHMS.md §PSP):
 *
 *   F(α, B, L) = ½ ‖(W − diag(α) B − L) D‖_F² + τ ‖L D‖_*,   B ∈ {±1}^{N×K},  rank(L) ≤ r
 *
 * D = I (plain) or D = diag(d) with d the RMS of each calibration input channel ("activation"
 * weighting). τ = tauRatio · σ_{r+1}((W − α₀B₀) D) is computed ONCE from the initial residual of
 * plain binarization and then held fixed. Block-coordinate steps, each of which cannot increase F:
 *   L-step (proximal): with E = (W − αB) D and M = L D, minimise ½‖E − M‖² + τ‖M‖_* over rank-r M
 *     whose column space lies in span(Q), Q an orthonormal sketch of E that contains the previous
 *     M's column space: M = Q · SVT_τ,r(Qᵀ E) (truncated singular-value soft-thresholding; exact
 *     on the subspace, and the previous M is feasible, so F cannot rise); L = M D⁻¹;
 *   B-step: B = sign⁺(W − L), α_n = Σ_k d_k² |(W − L)_nk| / Σ_k d_k² (the exact joint minimiser
 *     of the weighted square; = mean|W − L| for D = I).
 * A final L-step follows the last B-step. `history` records F after every step.
 */
import { jsMatmul, randomizedSvd, type Matmul } from '../linalg/index.js';
import type { Qr } from '../linalg/qr.js';
import { jsWeightPasses, type WeightPasses } from './weight-passes.js';

export interface PspOptions {
  rank: number;
  /** cap on the L/B alternations (default 3) */
  iterations?: number;
  /** stop when one alternation lowers F by ≤ tolerance·F (default 0: run the cap) */
  tolerance?: number;
  /** τ = tauRatio · σ_{r+1} of the initial (weighted) residual, fixed for the layer (default 0.25) */
  tauRatio?: number;
  /** per-input-channel weights d (length cols, > 0): the "activation" weighting D = diag(d) */
  columnWeights?: Float64Array;
  seed?: number;
  matmul?: Matmul;
  /** the passes over the weight (default the TypeScript reference; the engine's threads in the pipeline) */
  passes?: WeightPasses;
  /** the randomized SVD's QR (default src/linalg/qr.ts) */
  qr?: Qr;
}

export interface PspResult {
  signs: Int8Array;
  scales: Float32Array;
  /** [rows, rank] = U_r diag(σ − τ) */
  lrA: Float32Array;
  /** [rank, cols] = V_rᵀ D⁻¹ */
  lrB: Float32Array;
  rank: number;
  /** ‖W − αB‖_F of the initial binarization */
  errorBefore: number;
  /** ‖W − αB − L‖_F after PSP */
  errorAfter: number;
  /** the fixed threshold τ (0 for rank 0) */
  tau: number;
  /** F after the initial binarization (L = 0) and after every L- and B-step */
  history: number[];
}

/** M = U diag(σ − τ) Vᵀ in the weighted space: U [rows, kept], a = U diag(σ − τ), v = Vᵀ [kept, cols]. */
interface LowRank {
  u: Float64Array;
  a: Float32Array;
  v: Float32Array;
  kept: number;
  dense: Float32Array;
  nuclear: number;
}

export async function psp(w: Float32Array, rows: number, cols: number, options: PspOptions): Promise<PspResult> {
  const mm = options.matmul ?? jsMatmul;
  const passes = options.passes ?? jsWeightPasses;
  const rank = Math.min(options.rank, rows, cols);
  const iterations = options.iterations ?? 3;
  const tolerance = options.tolerance ?? 0;
  const tauRatio = options.tauRatio ?? 0.25;
  const d = options.columnWeights;
  const dw = d === undefined ? new Float64Array(cols).fill(1) : Float64Array.from(d);
  const d2 = Float64Array.from(dw, (x) => x * x);
  const n = rows * cols;
  const signs = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  // current M = U diag(σ − τ) Vᵀ (weighted space): factors, dense, nuclear norm (M = 0 at the start)
  let cur: LowRank = { u: new Float64Array(0), a: new Float32Array(0), v: new Float32Array(0), kept: 0, dense: new Float32Array(n), nuclear: 0 };
  // E = (W − αB) D with ½‖E − M‖² and ‖W − αB‖², summed per row, the rows in order
  const residual = new Float32Array(n);
  const rowHalf = new Float64Array(rows);
  const rowPlain = new Float64Array(rows);
  const sum = (x: Float64Array): number => {
    let t = 0;
    for (let r = 0; r < rows; r++) t += x[r]!;
    return t;
  };
  const fillResidual = (): number => {
    passes.residual(w, signs, scales, dw, cur.dense, rows, cols, residual, rowHalf, rowPlain);
    return 0.5 * sum(rowHalf);
  };
  // B = sign⁺(W − L), L = M D⁻¹, α the D²-weighted scales (the initial binarization: M = 0)
  passes.bStep(w, cur.dense, dw, d2, rows, cols, signs, scales);
  let objective = fillResidual();
  const errorBefore = Math.sqrt(sum(rowPlain));
  if (rank <= 0) {
    return { signs, scales, lrA: new Float32Array(0), lrB: new Float32Array(0), rank: 0, errorBefore, errorAfter: errorBefore, tau: 0, history: [0.5 * sum(rowPlain)] };
  }

  const seed = options.seed ?? 0;
  const sketch = { oversample: 8, powerIterations: 2, matmul: mm, ...(options.qr === undefined ? {} : { qr: options.qr }) };
  const first = await randomizedSvd(residual, rows, cols, rank + 1, { ...sketch, seed });
  const tau = tauRatio * (first.s[rank] ?? first.sAll[rank] ?? 0);
  const history = [objective];

  // the buffer of the low-rank term not held by `cur`: the next L-step's product is written there (Matmul's `into`)
  let spare: Float32Array | undefined;
  const lStep = async (stepSeed: number, firstSketch?: typeof first): Promise<void> => {
    const t = firstSketch ?? await randomizedSvd(residual, rows, cols, rank, {
      ...sketch, seed: stepSeed, ...(cur.kept > 0 ? { basis: { data: cur.u, cols: cur.kept } } : {}),
    });
    let kept = 0;
    for (let k = 0; k < Math.min(rank, t.rank); k++) if (t.s[k]! - tau > 0) kept++;
    const u = new Float64Array(rows * kept);
    const a = new Float32Array(rows * kept);
    const v = new Float32Array(kept * cols);
    let nuclear = 0;
    for (let k = 0; k < kept; k++) {
      const sigma = t.s[k]! - tau;
      nuclear += sigma;
      for (let r = 0; r < rows; r++) {
        u[r * kept + k] = t.u[r * t.rank + k]!;
        a[r * kept + k] = t.u[r * t.rank + k]! * sigma;
      }
      for (let c = 0; c < cols; c++) v[k * cols + c] = t.v[c * t.rank + k]!;
    }
    const dense = kept === 0 ? new Float32Array(n) : await mm(a, v, rows, kept, cols, spare === undefined ? {} : { into: spare });
    passes.distance(residual, dense, rows, cols, rowHalf);
    const value = 0.5 * sum(rowHalf) + tau * nuclear;
    // exact on the sketch's subspace, which holds the previous M: only rounding can make it worse
    if (value <= objective) {
      spare = cur.dense;
      cur = { u, a, v, kept, dense, nuclear };
      objective = value;
    } else spare = dense;
    history.push(objective);
  };
  const bStep = (): void => {
    passes.bStep(w, cur.dense, dw, d2, rows, cols, signs, scales);
    objective = fillResidual() + tau * cur.nuclear;
    history.push(objective);
  };

  for (let it = 0; it < iterations; it++) {
    const start = history[history.length - 1]!;
    await lStep(seed + it, it === 0 ? first : undefined);
    bStep();
    const end = history[history.length - 1]!;
    if (start - end <= tolerance * start) break;
  }
  await lStep(seed + iterations);

  const lrA = Float32Array.from(cur.a);
  const lrB = new Float32Array(cur.kept * cols);
  for (let k = 0; k < cur.kept; k++) for (let c = 0; c < cols; c++) lrB[k * cols + c] = cur.v[k * cols + c]! / dw[c]!;
  // ‖W − αB − L‖ with L = lrA·lrB as the simulated weight holds it (built in the residual's buffer, unused from here)
  passes.weight(signs, scales, lrA, lrB, cur.kept, rows, cols, residual);
  passes.distance(w, residual, rows, cols, rowHalf);
  return { signs, scales, lrA, lrB, rank: cur.kept, errorBefore, errorAfter: Math.sqrt(sum(rowHalf)), tau, history };
}

/** Dense diag(scales)·signs + lrA·lrB as Float32 [rows, cols] (the simulated weight). */
export function reconstructWeight(signs: Int8Array, scales: Float32Array, lrA: Float32Array, lrB: Float32Array, rank: number, rows: number, cols: number,
  passes: WeightPasses = jsWeightPasses): Float32Array {
  const out = new Float32Array(rows * cols);
  passes.weight(signs, scales, lrA, lrB, rank, rows, cols, out);
  return out;
}
