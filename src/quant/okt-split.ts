/**
 * OKT for every input width K (docs/ALGORITHMS.md §OKT, "Widths without a balanced factorisation"): the rotation
 * is R = diag(R1 ⊗ R2, R3) with (a, b, r) = kroneckerSplit(K), K = a·b + r.
 *
 *   r = 0 (every Llama / Qwen / Mistral width): learnOkt unchanged, R = R1 ⊗ R2.
 *   r > 0 (prime K, 2·prime, …):
 *     R1, R2 — learnOkt on the first a·b input channels (weights and calibration rows restricted to them);
 *     R3 [r, r] — then, with R1 ⊗ R2 fixed, the weight EM of OKT on whole rows (stacked, each matrix ÷ rms):
 *       E-step  α_n = (‖y_A,n‖₁ + ‖y_B,n‖₁) / K,  T_n = α_n sign(y_B,n)   (y_A = w_A (R1 ⊗ R2), y_B = w_B R3)
 *       M-step  R3 = polar(Σ_n w_B,nᵀ T_n)                                 (Procrustes, r×r)
 *     which never increases ε_w of the whole rows; O(N·r² + r³) per iteration with r < √K. The activation
 *     4th-moment term is not applied to the r remainder channels.
 */
import { identity, jsMatmul, procrustes, Rng } from '../linalg/index.js';
import { kroneckerSplit, rotateRows } from './kronecker.js';
import { learnOkt, randomOrthogonal, type OktInput, type OktOptions, type OktResult } from './okt.js';

export interface SplitOktResult extends OktResult {
  /** size of the remainder block (0: R = R1 ⊗ R2) */
  r: number;
  /** R3 [r, r] (undefined when r = 0) */
  r3: Float64Array | undefined;
  /** r > 0: history, iterations and converged are those of R1, R2's OKT; r3Iterations those of R3's EM; weightError
   *  is of the whole rows, `before` at R = I */
  r3Iterations: number;
}

/** Columns [from, to) of every row of data [rows, cols]. */
function columns(data: Float32Array | Float64Array, rows: number, cols: number, from: number, to: number): Float32Array {
  const w = to - from;
  const out = new Float32Array(rows * w);
  for (let t = 0; t < rows; t++) for (let j = 0; j < w; j++) out[t * w + j] = data[t * cols + from + j]!;
  return out;
}

/** Learns R = diag(R1 ⊗ R2, R3) for input width `cols` (see the module comment). */
export async function learnSplitOkt(weights: readonly OktInput[], cols: number, options: OktOptions = {}): Promise<SplitOktResult> {
  const { a, b, r } = kroneckerSplit(cols);
  if (r === 0) return { ...(await learnOkt(weights, cols, options)), r: 0, r3: undefined, r3Iterations: 0 };
  const m = a * b;
  const K = cols;
  const head = await learnOkt(
    weights.map((w) => ({ data: columns(w.data, w.rows, cols, 0, m), rows: w.rows })),
    m,
    {
      ...options,
      ...(options.activations === undefined ? {} : {
        activations: { data: columns(options.activations.data, options.activations.rows, cols, 0, m), rows: options.activations.rows },
      }),
    },
  );
  if (head.a !== a || head.b !== b) throw new Error(`learnSplitOkt: factors ${head.a}x${head.b} for ${m}, expected ${a}x${b}`);

  // whole rows, each matrix ÷ its rms (as learnOkt stacks them)
  let n = 0;
  for (const w of weights) n += w.rows;
  const yA = new Float64Array(n * m);
  const dB = new Float32Array(n * r);
  const rowL1A = new Float64Array(n);
  const rowL1Plain = new Float64Array(n);
  let energy = 0;
  let off = 0;
  for (const w of weights) {
    let ss = 0;
    const len = w.rows * cols;
    for (let i = 0; i < len; i++) ss += w.data[i]! * w.data[i]!;
    const s = ss > 0 ? 1 / Math.sqrt(ss / len) : 1;
    const wa = columns(w.data, w.rows, cols, 0, m);
    const wb = columns(w.data, w.rows, cols, m, cols);
    for (let i = 0; i < wa.length; i++) wa[i] = wa[i]! * s;
    for (let i = 0; i < wb.length; i++) wb[i] = wb[i]! * s;
    yA.set(rotateRows(Float64Array.from(wa), w.rows, head.r1, a, head.r2, b), off * m);
    dB.set(wb, off * r);
    for (let t = 0; t < w.rows; t++) {
      let plain = 0;
      for (let k = 0; k < cols; k++) plain += Math.abs(w.data[t * cols + k]! * s);
      rowL1Plain[off + t] = plain;
    }
    energy += ss * s * s;
    off += w.rows;
  }
  for (let t = 0; t < n; t++) {
    let h = 0;
    for (let k = 0; k < m; k++) h += Math.abs(yA[t * m + k]!);
    rowL1A[t] = h;
  }
  const mm = options.matmul ?? jsMatmul;
  /** ε_w = 1 − Σ_n (‖y_A,n‖₁ + ‖y_B,n‖₁)² / (K E) of the whole rows, with y_B = d_B R3. */
  const objective = (yB: Float32Array): number => {
    let acc = 0;
    for (let t = 0; t < n; t++) {
      let h = rowL1A[t]!;
      for (let k = 0; k < r; k++) h += Math.abs(yB[t * r + k]!);
      acc += h * h;
    }
    return energy > 0 ? 1 - acc / (K * energy) : 0;
  };
  let before = 0;
  for (let t = 0; t < n; t++) before += rowL1Plain[t]! ** 2;
  before = energy > 0 ? 1 - before / (K * energy) : 0;

  let r3 = options.init === 'random' ? randomOrthogonal(r, new Rng((options.seed ?? 0) + 0x5eed)) : identity(r);
  let yB = await mm(dB, Float32Array.from(r3), n, r, r);
  let j = objective(yB);
  const cap = options.iterations ?? 20;
  const tol = options.tolerance ?? 1e-7;
  let iterations = 0;
  for (; iterations < cap; iterations++) {
    const targets = new Float32Array(n * r);
    for (let t = 0; t < n; t++) {
      let h = rowL1A[t]!;
      for (let k = 0; k < r; k++) h += Math.abs(yB[t * r + k]!);
      const alpha = h / K;
      for (let k = 0; k < r; k++) targets[t * r + k] = yB[t * r + k]! >= 0 ? alpha : -alpha;
    }
    const q = procrustes(Float64Array.from(await mm(dB, targets, r, n, r, { transposeA: true })), r);
    const y = await mm(dB, Float32Array.from(q), n, r, r);
    const value = objective(y);
    if (value > j) break; // (cannot happen beyond rounding: the EM step is a majoriser minimiser)
    const prev = j;
    r3 = q;
    yB = y;
    j = value;
    if (prev - j <= tol * prev) {
      iterations++;
      break;
    }
  }
  return { ...head, r, r3, r3Iterations: iterations, weightError: { before, after: j } };
}
