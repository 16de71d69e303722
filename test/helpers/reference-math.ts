/** Plain-loop references and the tolerance measure shared by the numeric tests. */
import { expect } from 'vitest';

/** op(A)·op(B) [m, n] summed in float64 by a plain loop, independent of the GEMMs under test
 *  (A [m, k], or [k, m] with transposeA; B [k, n], or [n, k] with transposeB). */
export function float64Product(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number,
  transposeA = false, transposeB = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += (transposeA ? a[p * m + i]! : a[i * k + p]!) * (transposeB ? b[j * k + p]! : b[p * n + j]!);
    c[i * n + j] = s;
  }
  return c;
}

/** max |x − y| / max |y| (the lengths must agree). */
export function relDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  expect(x.length).toBe(y.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i]! - y[i]!));
    m = Math.max(m, Math.abs(y[i]!));
  }
  return d / Math.max(m, 1e-30);
}

/** max |x − y| (the lengths must agree). */
export function maxAbsDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  expect(x.length).toBe(y.length);
  let d = 0;
  for (let i = 0; i < y.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  return d;
}
