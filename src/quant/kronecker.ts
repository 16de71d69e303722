/**
 * Kronecker rotation R = R1 ⊗ R2 (R1 [a, a], R2 [b, b], n = a·b) applied to rows:
 * x' = x R computed as X' = R1ᵀ X R2 with X the row reshaped row-major to (a, b), i.e.
 * x'[i·b + j] = Σ_{p,q} x[p·b + q] R1[p, i] R2[q, j]  (src/quant/recipe.ts). Cost per row a·b·(a + b).
 */

/** Largest divisor a of n with a ≤ √n, and b = n / a (BWLA's factorisation). */
export function kroneckerFactors(n: number): { a: number; b: number } {
  let a = Math.floor(Math.sqrt(n));
  while (a > 1 && n % a !== 0) a--;
  return { a, b: n / a };
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
