/**
 * Orthogonal-Kronecker Transformation (BWLA): learn R = R1 ⊗ R2 (R1 [a, a], R2 [b, b], K = a·b)
 * so that the rotated weight rows w_n R sit on two symmetric modes ±α_n, while the rotated
 * calibration activations x_t R keep light tails (docs/ALGORITHMS.md §OKT):
 *
 *   J(R) = ε_w(R) + λ · κ_x(R)
 *   ε_w(R) = Σ_n min_α ‖w_n R − α sign(w_n R)‖² / Σ_n ‖w_n‖²  =  1 − Σ_n ‖w_n R‖₁² / (K Σ_n ‖w_n‖²)
 *   κ_x(R) = (K / 3T) Σ_t ‖x_t R‖₄⁴ / ‖x_t‖₂⁴                (activation 4th moment; 1 for Gaussian rows)
 *
 * minimised by EM / majorise-minimise block-coordinate steps on R1 (R2 fixed) and R2 (R1 fixed):
 *   E-step: T_n = α_n sign(Y_n) (Y_n = R1ᵀ X_n R2, X_n = w_n reshaped row-major to (a, b)), which
 *           makes ε_w(R) ≤ Σ_n ‖Y_n − T_n‖² / E exact at the current R;
 *   activation majoriser: κ_x(Y) ≤ κ_x(Y⁰) + ⟨G, Y − Y⁰⟩ + Σ_t (L_t/2)‖Y_t − Y⁰_t‖²,
 *           G = ∇κ_x(Y⁰), L_t = β·12 c_t max_k (Y⁰_tk)² (β doubled until the step decreases J);
 *   M-step: both majorisers are linear in Y on the orthogonal group (‖Y_t‖ is rotation-invariant),
 *           so the minimiser is the Procrustes solution R1 = polar(M1) / R2 = polar(M2).
 * Without the activation term (λ = 0) every step is the exact block minimiser of the majoriser and
 * is taken as is (this is the plain EM); with it a step is kept only when J does not increase.
 * Optional graduated smoothing (`anneal`): stages that replace |y| in ε_w by s·log cosh(y/s),
 * s = σ·rms(w_n), for a decreasing σ schedule, then the exact objective.
 * Weight matrices that share an input (q/k/v; gate/up) are stacked, each scaled by 1/rms(W).
 */
import { identity, jsMatmul, qr, Rng, procrustes, type Matmul } from '../linalg/index.js';
import { kroneckerFactors } from './kronecker.js';

export interface OktInput {
  data: Float32Array | Float64Array;
  rows: number;
}

export interface OktOptions {
  /** cap on the iterations of the final (exact-objective) stage (default 20) */
  iterations?: number;
  /** stop a stage when one iteration lowers its objective by ≤ tolerance·J (default 1e-7) */
  tolerance?: number;
  init?: 'identity' | 'random';
  seed?: number;
  matmul?: Matmul;
  /** calibration rows of the group's input [rows, K] (unrotated); used when activationWeight > 0 */
  activations?: OktInput;
  /** λ, the weight of the activation 4th-moment term (default 0) */
  activationWeight?: number;
  /** smoothing schedule σ (fractions of each row's RMS), run before the exact stage (default none) */
  anneal?: readonly number[];
  /** iteration cap of each smoothing stage (default 10) */
  annealIterations?: number;
  /** the same algorithm elsewhere (the block engine's GPU, src/runtime/device-okt.ts): learnOkt hands the call to it */
  device?: OktDevice;
}

/** An implementation of learnOkt with the same contract (given the options without `device`). */
export type OktDevice = (weights: readonly OktInput[], cols: number, options: OktOptions) => Promise<OktResult>;

export interface OktResult {
  r1: Float64Array;
  r2: Float64Array;
  a: number;
  b: number;
  /** J before the first and after every iteration of the exact stage */
  history: number[];
  /** iterations of the exact stage */
  iterations: number;
  /** the exact stage stopped on the tolerance (not on the cap) */
  converged: boolean;
  /** ε_w of the stacked, rms-normalised weights at the start (before any stage) and at the end */
  weightError: { before: number; after: number };
  /** κ_x at the start and at the end (undefined without activations) */
  activationTail: { before: number; after: number } | undefined;
}

/** Haar-random orthogonal n×n matrix (QR of a Gaussian matrix, R diagonal made positive). */
export function randomOrthogonal(n: number, rng: Rng): Float64Array {
  const g = new Float64Array(n * n);
  for (let i = 0; i < g.length; i++) g[i] = rng.normal();
  return qr(g, n, n).q;
}

/** Rows stacked into one [n, K] float32 array (the products' operand type), each matrix multiplied by `scale(matrix)`. */
function stack(inputs: readonly OktInput[], cols: number, scale: (w: OktInput) => number): { data: Float32Array; rows: number } {
  let rows = 0;
  for (const w of inputs) rows += w.rows;
  const data = new Float32Array(rows * cols);
  let off = 0;
  for (const w of inputs) {
    const s = scale(w);
    const n = w.rows * cols;
    for (let i = 0; i < n; i++) data[off + i] = w.data[i]! * s;
    off += n;
  }
  return { data, rows };
}

function rmsScale(w: OktInput, cols: number): number {
  let ss = 0;
  const n = w.rows * cols;
  for (let i = 0; i < n; i++) ss += w.data[i]! * w.data[i]!;
  return ss > 0 ? 1 / Math.sqrt(ss / n) : 1;
}

/** One stack of rows in the (a, b) layout with what the steps need about it. */
interface Block {
  d: Float32Array; // [n, a, b]
  dt: Float32Array; // [n, b, a]
  n: number;
  y: Float32Array; // current R1ᵀ D_n R2, [n, a, b]
}

/** The factorisation K = a·b and the initial factors of learnOkt's options (identity, or Haar-random from Rng(seed)). */
export function oktStart(cols: number, options: Pick<OktOptions, 'init' | 'seed'>): { a: number; b: number; r1: Float64Array; r2: Float64Array } {
  const { a, b } = kroneckerFactors(cols);
  const rng = new Rng(options.seed ?? 0);
  const r1 = options.init === 'random' ? randomOrthogonal(a, rng) : identity(a);
  const r2 = options.init === 'random' ? randomOrthogonal(b, rng) : identity(b);
  return { a, b, r1, r2 };
}

export async function learnOkt(weights: readonly OktInput[], cols: number, options: OktOptions = {}): Promise<OktResult> {
  if (options.device !== undefined) {
    const { device, ...rest } = options;
    return device(weights, cols, rest);
  }
  const mm = options.matmul ?? jsMatmul;
  const K = cols;
  const cap = options.iterations ?? 20;
  const tol = options.tolerance ?? 1e-7;
  const start = oktStart(cols, options);
  const { a, b } = start;
  let { r1, r2 } = start;
  const lambda = options.activations === undefined ? 0 : options.activationWeight ?? 0;

  // the factors (a×a, b×b, float64 from Procrustes) enter the products in float32
  const rotate = async (blk: { dt: Float32Array; n: number }, q1: Float64Array, q2: Float64Array): Promise<Float32Array> => {
    const ut = await mm(blk.dt, Float32Array.from(q1), blk.n * b, a, a); // Ut[n,q,i] = (R1ᵀ D_n)[i,q]
    return mm(transposeBlocks(ut, blk.n, b, a), Float32Array.from(q2), blk.n * a, b, b);
  };
  const makeBlock = async (data: Float32Array, n: number): Promise<Block> => {
    const dt = transposeBlocks(data, n, a, b);
    return { d: data, dt, n, y: await rotate({ dt, n }, r1, r2) };
  };

  const w = stack(weights, cols, (m) => rmsScale(m, cols));
  const wb = await makeBlock(w.data, w.rows);
  let energy = 0;
  for (let i = 0; i < w.data.length; i++) energy += w.data[i]! * w.data[i]!;
  // per-row smoothing scale unit: rms(w_n) (rotation-invariant)
  const rowRms = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += w.data[r * K + k]! ** 2;
    rowRms[r] = Math.sqrt(ss / K);
  }

  let ab: Block | undefined;
  let tokenWeight = new Float64Array(0); // c_t = K / (3 T ‖x_t‖⁴)
  if (lambda > 0 && options.activations !== undefined) {
    const x = stack([options.activations], cols, () => 1);
    tokenWeight = new Float64Array(x.rows);
    let counted = 0;
    for (let t = 0; t < x.rows; t++) {
      let ss = 0;
      for (let k = 0; k < K; k++) ss += x.data[t * K + k]! ** 2;
      if (ss > 0) {
        tokenWeight[t] = 1 / (ss * ss);
        counted++;
      }
    }
    for (let t = 0; t < x.rows; t++) tokenWeight[t] = (tokenWeight[t]! * K) / (3 * Math.max(counted, 1));
    ab = await makeBlock(x.data, x.rows);
  }

  /** ε_w with |y| replaced by h_s(y) = s log cosh(y/s), s = sigma·rms(w_n) (sigma = 0: exact). */
  const weightObjective = (y: Float32Array, sigma: number): number => {
    let acc = 0;
    for (let r = 0; r < w.rows; r++) {
      const s = sigma * rowRms[r]!;
      let h = 0;
      for (let k = 0; k < K; k++) h += smoothAbs(y[r * K + k]!, s);
      acc += h * h;
    }
    return energy > 0 ? 1 - acc / (K * energy) : 0;
  };
  /** −½ ∂ε_w/∂Y · E: the linear coefficient of the weight majoriser (the E-step targets T). */
  const weightTargets = (y: Float32Array, sigma: number): Float32Array => {
    const t = new Float32Array(y.length);
    for (let r = 0; r < w.rows; r++) {
      const s = sigma * rowRms[r]!;
      let h = 0;
      for (let k = 0; k < K; k++) h += smoothAbs(y[r * K + k]!, s);
      const alpha = h / K;
      for (let k = 0; k < K; k++) {
        const v = y[r * K + k]!;
        t[r * K + k] = s > 0 ? alpha * Math.tanh(v / s) : v >= 0 ? alpha : -alpha;
      }
    }
    return t;
  };
  const tail = (y: Float32Array): number => {
    let acc = 0;
    for (let t = 0; t < tokenWeight.length; t++) {
      let s4 = 0;
      for (let k = 0; k < K; k++) s4 += y[t * K + k]! ** 4;
      acc += tokenWeight[t]! * s4;
    }
    return acc;
  };
  const objective = (yw: Float32Array, ya: Float32Array | undefined, sigma: number): number =>
    weightObjective(yw, sigma) + (ya === undefined ? 0 : lambda * tail(ya));

  /** Activation majoriser pieces at Y⁰: curvature-scaled Y⁰ (L_t/β · Y⁰_t) and the gradient G. */
  const activationPieces = (y: Float32Array): { ly: Float32Array; g: Float32Array } => {
    const ly = new Float32Array(y.length);
    const g = new Float32Array(y.length);
    for (let t = 0; t < tokenWeight.length; t++) {
      const c = tokenWeight[t]!;
      let m = 0;
      for (let k = 0; k < K; k++) m = Math.max(m, y[t * K + k]! ** 2);
      for (let k = 0; k < K; k++) {
        const v = y[t * K + k]!;
        ly[t * K + k] = 12 * c * m * v;
        g[t * K + k] = 4 * c * v * v * v;
      }
    }
    return { ly, g };
  };

  let beta = [1, 1];
  /** One block step on factor f (0: R1, 1: R2); returns the (possibly unchanged) objective. */
  const factorStep = async (f: 0 | 1, sigma: number, current: number): Promise<number> => {
    const t = weightTargets(wb.y, sigma);
    // M(C) = Σ_n (D_n R2) C_nᵀ (f = 0) or Σ_n (R1ᵀ D_n)ᵀ C_n (f = 1), linear in C
    const prep = async (blk: Block): Promise<Float32Array> =>
      f === 0 ? transposeBlocks(await mm(blk.d, Float32Array.from(r2), blk.n * a, b, b), blk.n, a, b) : transposeBlocks(await mm(blk.dt, Float32Array.from(r1), blk.n * b, a, a), blk.n, b, a);
    // M (a×a or b×b) is small: it goes to Procrustes in float64
    const coef = async (p: Float32Array, n: number, c: Float32Array): Promise<Float64Array> =>
      Float64Array.from(f === 0 ? await mm(p, transposeBlocks(c, n, a, b), a, n * b, a, { transposeA: true }) : await mm(p, c, b, n * a, b, { transposeA: true }));
    const candidate = async (p: Float32Array, n: number, q: Float64Array): Promise<Float32Array> =>
      f === 0 ? transposeBlocks(await mm(p, Float32Array.from(q), n * b, a, a), n, b, a) : mm(p, Float32Array.from(q), n * a, b, b);
    const size = f === 0 ? a : b;
    const pw = await prep(wb);
    const mw = await coef(pw, wb.n, t);
    const scaleW = energy > 0 ? 2 / energy : 0;
    if (ab === undefined) {
      const q = procrustes(scale(mw, scaleW), size);
      const y = await candidate(pw, wb.n, q);
      if (f === 0) r1 = q;
      else r2 = q;
      wb.y = y;
      return objective(wb.y, undefined, sigma);
    }
    const pa = await prep(ab);
    const { ly, g } = activationPieces(ab.y);
    const mLy = await coef(pa, ab.n, ly);
    const mG = await coef(pa, ab.n, g);
    let bt = Math.max(beta[f]! / 2, 1 / 64);
    for (let attempt = 0; attempt < 24; attempt++, bt *= 2) {
      const m = new Float64Array(size * size);
      for (let i = 0; i < m.length; i++) m[i] = scaleW * mw[i]! + lambda * (bt * mLy[i]! - mG[i]!);
      const q = procrustes(m, size);
      const yw = await candidate(pw, wb.n, q);
      const ya = await candidate(pa, ab.n, q);
      const value = objective(yw, ya, sigma);
      if (value <= current) {
        if (f === 0) r1 = q;
        else r2 = q;
        wb.y = yw;
        ab.y = ya;
        beta[f] = bt;
        return value;
      }
    }
    return current; // no decreasing step found: stay
  };

  const runStage = async (sigma: number, iterations: number, record: number[]): Promise<{ iterations: number; converged: boolean }> => {
    beta = [1, 1];
    let j = objective(wb.y, ab?.y, sigma);
    record.push(j);
    for (let it = 0; it < iterations; it++) {
      const prev = j;
      j = await factorStep(0, sigma, j);
      j = await factorStep(1, sigma, j);
      record.push(j);
      if (prev - j <= tol * prev) return { iterations: it + 1, converged: true };
    }
    return { iterations, converged: false };
  };

  const weightBefore = weightObjective(wb.y, 0);
  const tailBefore = ab === undefined ? undefined : tail(ab.y);
  for (const sigma of options.anneal ?? []) {
    const stage: number[] = [];
    await runStage(sigma, options.annealIterations ?? 10, stage);
  }
  const history: number[] = [];
  const exact = await runStage(0, cap, history);
  return {
    r1, r2, a, b, history, iterations: exact.iterations, converged: exact.converged,
    weightError: { before: weightBefore, after: weightObjective(wb.y, 0) },
    activationTail: ab === undefined || tailBefore === undefined ? undefined : { before: tailBefore, after: tail(ab.y) },
  };
}

/** s·log cosh(y/s) (|y| for s = 0), computed without overflow. */
function smoothAbs(y: number, s: number): number {
  const v = Math.abs(y);
  if (s <= 0) return v;
  return v + s * (Math.log1p(Math.exp((-2 * v) / s)) - Math.LN2);
}

function scale(m: Float64Array, s: number): Float64Array {
  const out = new Float64Array(m.length);
  for (let i = 0; i < m.length; i++) out[i] = m[i]! * s;
  return out;
}

/** [blocks, p, q] → [blocks, q, p] (transpose of each p×q block). */
function transposeBlocks(src: Float32Array, blocks: number, p: number, q: number): Float32Array {
  const out = new Float32Array(src.length);
  const size = p * q;
  for (let k = 0; k < blocks; k++) {
    const o = k * size;
    for (let i = 0; i < p; i++) for (let j = 0; j < q; j++) out[o + j * p + i] = src[o + i * q + j]!;
  }
  return out;
}

/** W' = W R for weight rows (same operation as the online activation rotation). */
export { rotateRows as rotateWeightRows } from './kronecker.js';

/** Kronecker product R1 ⊗ R2 as a dense (a·b)² matrix (tests only). */
export function kroneckerProduct(r1: Float64Array, a: number, r2: Float64Array, b: number): Float64Array {
  const n = a * b;
  const out = new Float64Array(n * n);
  for (let p = 0; p < a; p++)
    for (let i = 0; i < a; i++)
      for (let q = 0; q < b; q++)
        for (let j = 0; j < b; j++) out[(p * b + q) * n + i * b + j] = r1[p * a + i]! * r2[q * b + j]!;
  return out;
}
