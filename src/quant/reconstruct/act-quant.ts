/**
 * Activation quantizers of the reconstruction, per row (token) of length `cols`, forward and
 * backward (docs/ALGORITHMS.md §Block-wise reconstruction). One learnable scalar per quantizer:
 * the threshold ratio t (ternary, levels) or the clip ratio c (int).
 *
 *   int b bits (the recipe's):  qmax = 2^(b−1)−1, s = c·max|x|/qmax, q = clamp(round(x/s), ±qmax)·s
 *   ternary (the recipe's):     μ = mean|x|, Δ = t·μ, m_j = [|x_j| > Δ], s = mean{|x_j| : m_j}, q = s·sign(x)·m
 *   levels L (a stage of the smooth schedule, L odd ≥ 3): u = 6·t·μ / L, qmax = (L−1)/2,
 *                               q = clamp(round(x/u), ±qmax)·u   (L = 3: the ternary's zero band ±Δ)
 *
 * Gradients:
 *   input (straight-through): ∂q/∂x = 1, except 0 where int / levels clamp (|x/s| > qmax);
 *   int c (LSQ):     ∂q/∂s = round(x/s) − x/s inside the range, ±qmax where clamped; ∂s/∂c = max|x|/qmax;
 *   levels t (LSQ):  the same with u, ∂u/∂t = 6μ/L;
 *   ternary t:       the step [|x| > Δ] is relaxed to a ramp of width w = max(Δ, 0.05·μ) around Δ for the
 *                    parameter gradient only: ∂q_j/∂t = −s·sign(x_j)·(μ/w)·[| |x_j| − Δ | < w/2].
 * The per-row statistics (max|x|, μ, s) are treated as constants in the input gradient.
 *
 * `causal` (CausalRows) declares causal softmax rows: row r is query i = r mod period, its unmasked keys are
 * lo_i … i (lo_i = max(0, i − window + 1) with a sliding window), the other entries 0. Only the unmasked
 * entries are visited (no input gradient for the zeros); the means μ divide by the unmasked count
 * n_i = i − lo_i + 1 (`unmasked`, AttentionRecipe.probsRow 'unmasked', src/quant/attention-probs.ts) or by
 * cols (probsRow 'window', recipes before issue #16: the same result as the dense rows).
 */
import { firstVisibleKey } from '../attention-probs.js';
import { roundHalfEven } from '../quantizers.js';
import { alloc, type Arr } from './gemm.js';

/** Causal softmax rows of `period` queries (see above). */
export interface CausalRows {
  readonly period: number;
  /** keys with i − j ≥ slidingWindow are masked; undefined = plain causal */
  readonly slidingWindow: number | undefined;
  /** the means divide by the row's unmasked keys (else by cols) */
  readonly unmasked: boolean;
}

/** First entry of row r that is visited. */
function rowStart(r: number, causal: CausalRows | undefined): number {
  return causal === undefined ? 0 : firstVisibleKey(r % causal.period, causal.slidingWindow);
}

/** One past the last entry of row r that is visited. */
function rowEnd(r: number, cols: number, causal: CausalRows | undefined): number {
  return causal === undefined ? cols : (r % causal.period) + 1;
}

/** The divisor of row r's mean |x|. */
function rowCount(r: number, cols: number, causal: CausalRows | undefined): number {
  return causal === undefined || !causal.unmasked ? cols : rowEnd(r, cols, causal) - rowStart(r, causal);
}

/** Σ_{j0 ≤ j < n} |x[o + j]| / count: a row's mean |x| over its visited entries. */
function rowAbsMean(x: Arr, o: number, j0: number, n: number, count: number): number {
  let sum = 0;
  for (let j = j0; j < n; j++) sum += Math.abs(x[o + j]!);
  return sum / count;
}

export type TrainQuantizer =
  | { readonly kind: 'none' }
  | { readonly kind: 'int'; readonly bits: number }
  | { readonly kind: 'ternary' }
  | { readonly kind: 'levels'; readonly levels: number };

/** Smallest threshold ratio the levels family uses (its step is proportional to t). */
const LEVELS_MIN_T = 0.05;

/** Per-row constants of one forward, kept for the backward. */
export interface QuantRows {
  /** int: max|x|; levels / ternary: μ = mean|x| */
  readonly stat: Float64Array;
  /** int: s; levels: u; ternary: s (mean kept magnitude) */
  readonly scale: Float64Array;
}

export function describeTrainQuantizer(q: TrainQuantizer): string {
  switch (q.kind) {
    case 'none': return 'float';
    case 'int': return `int${q.bits}`;
    case 'ternary': return 'ternary';
    case 'levels': return `${q.levels} levels`;
  }
}

/** q(x) row by row; `param` is t or c. */
export function quantForward<T extends Arr>(q: TrainQuantizer, param: number, x: T, rows: number, cols: number,
  causal?: CausalRows): { out: T; rowsInfo: QuantRows } {
  const out = alloc(x, rows * cols);
  const stat = new Float64Array(rows);
  const scale = new Float64Array(rows);
  switch (q.kind) {
    case 'none':
      out.set(x.subarray(0, rows * cols));
      break;
    case 'int': {
      const qmax = 2 ** (q.bits - 1) - 1;
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const j0 = rowStart(r, causal);
        const n = rowEnd(r, cols, causal);
        let amax = 0;
        for (let j = j0; j < n; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
        const s = amax === 0 ? 1 : (param * amax) / qmax;
        stat[r] = amax;
        scale[r] = s;
        for (let j = j0; j < n; j++) {
          let v = roundHalfEven(x[o + j]! / s);
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          out[o + j] = v * s;
        }
      }
      break;
    }
    case 'levels': {
      const qmax = (q.levels - 1) / 2;
      const t = Math.max(param, LEVELS_MIN_T);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const j0 = rowStart(r, causal);
        const n = rowEnd(r, cols, causal);
        const mu = rowAbsMean(x, o, j0, n, rowCount(r, cols, causal));
        const u = (6 * t * mu) / q.levels;
        stat[r] = mu;
        scale[r] = u;
        if (u === 0) continue;
        for (let j = j0; j < n; j++) {
          let v = Math.round(x[o + j]! / u);
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          out[o + j] = v * u;
        }
      }
      break;
    }
    case 'ternary': {
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const j0 = rowStart(r, causal);
        const n = rowEnd(r, cols, causal);
        const mu = rowAbsMean(x, o, j0, n, rowCount(r, cols, causal));
        const delta = param * mu;
        let kept = 0;
        let keptSum = 0;
        for (let j = j0; j < n; j++) {
          const a = Math.abs(x[o + j]!);
          if (a > delta) {
            kept++;
            keptSum += a;
          }
        }
        const s = kept === 0 ? 0 : keptSum / kept;
        stat[r] = mu;
        scale[r] = s;
        for (let j = j0; j < n; j++) {
          const v = x[o + j]!;
          out[o + j] = Math.abs(v) > delta ? (v > 0 ? s : -s) : 0;
        }
      }
      break;
    }
  }
  return { out, rowsInfo: { stat, scale } };
}

/**
 * Backward of one quantizer: adds weight·∂L/∂x (straight-through) into `dx` and returns
 * weight·∂L/∂param. `g` = ∂L/∂q, `x` the forward input.
 */
export function quantBackward(q: TrainQuantizer, param: number, x: Arr, g: Arr, rows: number, cols: number,
  info: QuantRows, dx: Arr, weight: number, causal?: CausalRows): number {
  let dparam = 0;
  switch (q.kind) {
    case 'none':
      for (let i = 0; i < rows * cols; i++) dx[i] = dx[i]! + weight * g[i]!; // (zeros beyond a causal extent get a harmless gradient)
      return 0;
    case 'int':
    case 'levels': {
      const qmax = q.kind === 'int' ? 2 ** (q.bits - 1) - 1 : (q.levels - 1) / 2;
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const j0 = rowStart(r, causal);
        const n = rowEnd(r, cols, causal);
        const s = info.scale[r]!;
        // ∂s/∂param: int c → max|x|/qmax; levels t → 6μ/L (0 below the family's floor on t)
        const dsdp = q.kind === 'int'
          ? (info.stat[r] === 0 ? 0 : info.stat[r]! / qmax)
          : (param > LEVELS_MIN_T ? (6 * info.stat[r]!) / q.levels : 0);
        if (s === 0) continue;
        let rowGrad = 0;
        for (let j = j0; j < n; j++) {
          const z = x[o + j]! / s;
          const gj = g[o + j]!;
          if (z >= qmax) rowGrad += gj * qmax;
          else if (z <= -qmax) rowGrad -= gj * qmax;
          else {
            const rz = q.kind === 'int' ? roundHalfEven(z) : Math.round(z);
            rowGrad += gj * (rz - z);
            dx[o + j] = dx[o + j]! + weight * gj;
          }
        }
        dparam += rowGrad * dsdp;
      }
      return weight * dparam;
    }
    case 'ternary': {
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const j0 = rowStart(r, causal);
        const n = rowEnd(r, cols, causal);
        const mu = info.stat[r]!;
        const s = info.scale[r]!;
        const delta = param * mu;
        const w = Math.max(delta, 0.05 * mu);
        let rowGrad = 0;
        for (let j = j0; j < n; j++) {
          const gj = g[o + j]!;
          dx[o + j] = dx[o + j]! + weight * gj;
          const v = x[o + j]!;
          if (w > 0 && Math.abs(Math.abs(v) - delta) < w / 2) rowGrad -= gj * (v > 0 ? s : v < 0 ? -s : 0) * (mu / w);
        }
        dparam += rowGrad;
      }
      return weight * dparam;
    }
  }
}

/**
 * quantForward / quantBackward on float32 rows by an engine (the native addon's, on the CPU kernels' threads:
 * src/native/act-quant.ts); the functions above are their reference, equal bit for bit. `backward` returns the
 * parameter gradient's per-row shares (before the weight); the caller adds them in row order, as the reference does.
 */
export interface ActQuantKernels {
  forward(q: Exclude<TrainQuantizer, { kind: 'none' }>, param: number, x: Float32Array, rows: number, cols: number,
    causal: CausalRows | undefined, out: Float32Array, stat: Float64Array, scale: Float64Array): void;
  backward(q: Exclude<TrainQuantizer, { kind: 'none' }>, param: number, x: Float32Array, g: Float32Array, rows: number, cols: number,
    causal: CausalRows | undefined, info: QuantRows, weight: number, dx: Float32Array, rowGrad: Float64Array): void;
}

/** quantForward through `kernels` when given and the rows are float32 (else the reference). */
export function quantForwardWith<T extends Arr>(kernels: ActQuantKernels | undefined, q: TrainQuantizer, param: number, x: T, rows: number,
  cols: number, causal?: CausalRows): { out: T; rowsInfo: QuantRows } {
  if (kernels === undefined || q.kind === 'none' || !(x instanceof Float32Array)) return quantForward(q, param, x, rows, cols, causal);
  const out = new Float32Array(rows * cols);
  const stat = new Float64Array(rows);
  const scale = new Float64Array(rows);
  kernels.forward(q, param, x, rows, cols, causal, out, stat, scale);
  return { out: out as T, rowsInfo: { stat, scale } };
}

/** quantBackward through `kernels` when given and every array is float32 (else the reference). */
export function quantBackwardWith(kernels: ActQuantKernels | undefined, q: TrainQuantizer, param: number, x: Arr, g: Arr, rows: number,
  cols: number, info: QuantRows, dx: Arr, weight: number, causal?: CausalRows): number {
  if (kernels === undefined || q.kind === 'none' || !(x instanceof Float32Array) || !(g instanceof Float32Array) || !(dx instanceof Float32Array)) {
    return quantBackward(q, param, x, g, rows, cols, info, dx, weight, causal);
  }
  const rowGrad = new Float64Array(rows);
  kernels.backward(q, param, x, g, rows, cols, causal, info, weight, dx, rowGrad);
  let dparam = 0;
  for (let r = 0; r < rows; r++) dparam += rowGrad[r]!;
  return weight * dparam;
}

/** Σ|x| over all elements. */
export function sumAbs(x: Arr, n = x.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.abs(x[i]!);
  return s;
}
