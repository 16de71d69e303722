/**
 * Kronecker rotation R = R1 ⊗ R2 (R1 [a, a], R2 [b, b], n = a·b) applied to rows:
 * x' = x R computed as X' = R1ᵀ X R2 with X the row reshaped row-major to (a, b), i.e.
 * x'[i·b + j] = Σ_{p,q} x[p·b + q] R1[p, i] R2[q, j]  (src/quant/recipe.ts). Cost per row a·b·(a + b).
 * Widths without a balanced factorisation get R = diag(R1 ⊗ R2, R3) (kroneckerSplit, rotateRowsBy).
 */
import type { Numerics } from '../linalg/matmul.js';

/** The widest R2 of a rotation (R = R1 ⊗ R2 acts on a row as R1ᵀ X R2, X the row as a × b): bwq's choice, not
 *  the BWLA paper's (docs/ALGORITHMS.md §OKT, "Factor sizes"). */
export const KRONECKER_R2_MAX = 128;

/** Whether width n takes the widest R2 (two or more R2 blocks, and no more than 128 of them). */
function widestR2(n: number): boolean {
  return n >= 2 * KRONECKER_R2_MAX && n <= KRONECKER_R2_MAX * KRONECKER_R2_MAX;
}

/**
 * The factorisation n = a·b of an input width: for 256 ≤ n ≤ 128² the widest R2 — b the largest divisor of n
 * with b ≤ 128 (256 → 2 × 128, 768 → 6 × 128, 4096 → 32 × 128, 11008 → 86 × 128); otherwise the balanced split,
 * a the largest divisor with a ≤ √n (24 → 4 × 6, 25600 → 160 × 160, 27648 → 144 × 192).
 */
export function kroneckerFactors(n: number): { a: number; b: number } {
  if (widestR2(n)) {
    let b = KRONECKER_R2_MAX;
    while (b > 1 && n % b !== 0) b--;
    return { a: n / b, b };
  }
  let a = Math.floor(Math.sqrt(n));
  while (a > 1 && n % a !== 0) a--;
  return { a, b: n / a };
}

/** The exact factorisation is kept while its larger factor is at most BALANCE·√n (or 128 where the widest R2
 *  applies; docs/ALGORITHMS.md §OKT). */
export const KRONECKER_BALANCE = 2;

/**
 * The rotation layout of an input of width n: R = diag(R1 ⊗ R2, R3), R1 [a, a], R2 [b, b], R3 [r, r],
 * n = a·b + r. When no factor of kroneckerFactors(n) exceeds 2√n (or 128 for 256 ≤ n ≤ 128²) — every Llama /
 * Qwen / Mistral width, e.g. 3584, 4096, 5632, 11008, 14336, 18944, 25600, 27648 — it is used as is with r = 0.
 * Otherwise (prime n, 2·prime, …) a0 = ⌊√n⌋, m = a0·⌊n / a0⌋ and (a, b) = kroneckerFactors(m), r = n − m < a0 ≤ √n,
 * so no dense n×n matrix appears.
 */
export function kroneckerSplit(n: number): { a: number; b: number; r: number } {
  const exact = kroneckerFactors(n);
  const widest = KRONECKER_BALANCE * Math.sqrt(n);
  if (Math.max(exact.a, exact.b) <= (widestR2(n) ? Math.max(KRONECKER_R2_MAX, widest) : widest)) return { ...exact, r: 0 };
  const a0 = Math.floor(Math.sqrt(n));
  const m = a0 * Math.floor(n / a0);
  return { ...kroneckerFactors(m), r: n - m };
}

/** The factors of one rotation R = diag(R1 ⊗ R2, R3); r = 0 (and no r3) for a plain Kronecker rotation. */
export interface RotationFactors {
  readonly r1: Float32Array | Float64Array;
  readonly a: number;
  readonly r2: Float32Array | Float64Array;
  readonly b: number;
  readonly r3?: Float32Array | Float64Array | undefined;
  readonly r: number;
}

/**
 * Rows of x [rows, a·b + r] → rows of x diag(R1 ⊗ R2, R3): the first a·b entries of each row as in
 * rotateRows, the last r entries times R3 (x'[a·b + j] = Σ_q x[a·b + q] R3[q, j]).
 */
export function rotateRowsBy<T extends Float32Array | Float64Array>(x: T, rows: number, f: RotationFactors, out?: T): T {
  const { r1, a, r2, b, r } = f;
  if (r === 0) return rotateRows(x, rows, r1, a, r2, b, out);
  const r3 = f.r3;
  if (r3 === undefined || r3.length !== r * r) throw new Error(`rotateRowsBy: remainder factor must be [${r}, ${r}]`);
  const m = a * b;
  const n = m + r;
  if (x.length !== rows * n) throw new Error(`rotateRowsBy: ${x.length} elements for [${rows}, ${n}]`);
  const ctor = x.constructor as { new (len: number): T };
  const head = new ctor(rows * m);
  for (let t = 0; t < rows; t++) head.set(x.subarray(t * n, t * n + m), t * m);
  const rotated = rotateRows(head, rows, r1, a, r2, b);
  const result = (out ?? new ctor(x.length)) as T;
  const acc = new Float64Array(r);
  for (let t = 0; t < rows; t++) {
    const o = t * n;
    result.set(rotated.subarray(t * m, t * m + m), o);
    acc.fill(0);
    for (let q = 0; q < r; q++) {
      const v = x[o + m + q]!;
      if (v === 0) continue;
      for (let j = 0; j < r; j++) acc[j] = acc[j]! + v * r3[q * r + j]!;
    }
    for (let j = 0; j < r; j++) result[o + m + j] = acc[j]!;
  }
  return result;
}

/** Rows of x [rows, a·b] → rows of x (R1 ⊗ R2). Works on Float32Array or Float64Array. */
export function rotateRows<T extends Float32Array | Float64Array>(
  x: T,
  rows: number,
  r1: Float32Array | Float64Array,
  a: number,
  r2: Float32Array | Float64Array,
  b: number,
  out?: T,
): T {
  const n = a * b;
  if (x.length !== rows * n) throw new Error(`rotateRows: ${x.length} elements for [${rows}, ${n}]`);
  const result = (out ?? new (x.constructor as { new (len: number): T })(x.length)) as T;
  const tmp = new Float64Array(n); // Y = X R2  [a, b]
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    tmp.fill(0);
    for (let p = 0; p < a; p++) {
      for (let q = 0; q < b; q++) {
        const v = x[o + p * b + q]!;
        if (v === 0) continue;
        const r2o = q * b;
        const to = p * b;
        for (let j = 0; j < b; j++) tmp[to + j] = tmp[to + j]! + v * r2[r2o + j]!;
      }
    }
    // X' = R1ᵀ Y : X'[i, j] = Σ_p R1[p, i] Y[p, j]
    for (let i = 0; i < a; i++) {
      for (let j = 0; j < b; j++) result[o + i * b + j] = 0;
      for (let p = 0; p < a; p++) {
        const c = r1[p * a + i]!;
        if (c === 0) continue;
        const to = p * b;
        for (let j = 0; j < b; j++) result[o + i * b + j] = result[o + i * b + j]! + c * tmp[to + j]!;
      }
    }
  }
  return result;
}

/**
 * rotateRowsBy on float32 rows with an engine's products: the R1 ⊗ R2 part through `numerics.rotateRows` (an
 * engine's kron_rotate) when given, else the JS rotation; the remainder block through `numerics.matmul`.
 */
export async function rotateRowsWith(numerics: Numerics, x: Float32Array, rows: number, f: RotationFactors): Promise<Float32Array> {
  const { r1, a, r2, b, r } = f;
  const head = (xs: Float32Array): Promise<Float32Array> => numerics.rotateRows === undefined
    ? Promise.resolve(rotateRows(xs, rows, r1, a, r2, b))
    : numerics.rotateRows(xs, rows, Float32Array.from(r1), a, Float32Array.from(r2), b);
  if (r === 0) return head(x);
  if (f.r3 === undefined || f.r3.length !== r * r) throw new Error(`rotateRowsWith: remainder factor must be [${r}, ${r}]`);
  const m = a * b;
  const n = m + r;
  if (x.length !== rows * n) throw new Error(`rotateRowsWith: ${x.length} elements for [${rows}, ${n}]`);
  const xa = new Float32Array(rows * m);
  const xb = new Float32Array(rows * r);
  for (let t = 0; t < rows; t++) {
    xa.set(x.subarray(t * n, t * n + m), t * m);
    xb.set(x.subarray(t * n + m, t * n + n), t * r);
  }
  const ya = await head(xa);
  const yb = await numerics.matmul(xb, Float32Array.from(f.r3), rows, r, r);
  const out = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++) {
    out.set(ya.subarray(t * m, t * m + m), t * n);
    out.set(yb.subarray(t * r, t * r + r), t * n + m);
  }
  return out;
}
