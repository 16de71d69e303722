/**
 * Dense products in TypeScript on Float32Array or Float64Array, sums in float64 (JS numbers); the result has the
 * type of the first operand. The small products of the reference forward (src/native/) and the block
 * reconstruction's forward and backward (src/quant/reconstruct/) use them; large ones go to onnxruntime or the
 * GPU through the engines above.
 *
 *   nt: C[m,n] = A[m,k]·B[n,k]ᵀ      nn: C[m,n] = A[m,k]·B[k,n]      tn: C[m,n] = A[k,m]ᵀ·B[k,n]
 */

export type Arr = Float32Array | Float64Array;

/** A new zeroed array of the same element type as `like`. */
export function alloc<T extends Arr>(like: T, n: number): T {
  return (like instanceof Float64Array ? new Float64Array(n) : new Float32Array(n)) as T;
}

function check(what: string, a: Arr, b: Arr, asize: number, bsize: number): void {
  if (a.length < asize || b.length < bsize) {
    throw new RangeError(`${what}: operands have ${a.length} / ${b.length} values, need ${asize} / ${bsize}`);
  }
}

/** C = A·Bᵀ (C += A·Bᵀ with `accumulate`, into `out` when given), 4 rows of A per pass over B. */
export function gemmNT<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number, out?: T, accumulate = false): T {
  check('gemmNT', a, b, m * k, n * k);
  const c = out ?? alloc(a, m * n);
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    const a0 = i * k;
    const a1 = a0 + k;
    const a2 = a1 + k;
    const a3 = a2 + k;
    for (let j = 0; j < n; j++) {
      const bo = j * k;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let p = 0; p < k; p++) {
        const bv = b[bo + p]!;
        s0 += a[a0 + p]! * bv;
        s1 += a[a1 + p]! * bv;
        s2 += a[a2 + p]! * bv;
        s3 += a[a3 + p]! * bv;
      }
      if (accumulate) {
        c[i * n + j] = c[i * n + j]! + s0;
        c[(i + 1) * n + j] = c[(i + 1) * n + j]! + s1;
        c[(i + 2) * n + j] = c[(i + 2) * n + j]! + s2;
        c[(i + 3) * n + j] = c[(i + 3) * n + j]! + s3;
      } else {
        c[i * n + j] = s0;
        c[(i + 1) * n + j] = s1;
        c[(i + 2) * n + j] = s2;
        c[(i + 3) * n + j] = s3;
      }
    }
  }
  for (; i < m; i++) {
    const ao = i * k;
    for (let j = 0; j < n; j++) {
      const bo = j * k;
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ao + p]! * b[bo + p]!;
      c[i * n + j] = accumulate ? c[i * n + j]! + s : s;
    }
  }
  return c;
}

/** C = A·B (axpy rows, float64 row accumulator). */
export function gemmNN<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number): T {
  check('gemmNN', a, b, m * k, k * n);
  const c = alloc(a, m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    const ao = i * k;
    for (let p = 0; p < k; p++) {
      const v = a[ao + p]!;
      if (v === 0) continue;
      const bo = p * n;
      for (let j = 0; j < n; j++) row[j] = row[j]! + v * b[bo + j]!;
    }
    for (let j = 0; j < n; j++) c[i * n + j] = row[j]!;
  }
  return c;
}

/** C = Aᵀ·B with A [k, m] (float64 accumulator over the whole result). */
export function gemmTN<T extends Arr>(a: T, b: Arr, m: number, k: number, n: number): T {
  check('gemmTN', a, b, k * m, k * n);
  const acc = new Float64Array(m * n);
  for (let p = 0; p < k; p++) {
    const ao = p * m;
    const bo = p * n;
    for (let i = 0; i < m; i++) {
      const v = a[ao + i]!;
      if (v === 0) continue;
      const co = i * n;
      for (let j = 0; j < n; j++) acc[co + j] = acc[co + j]! + v * b[bo + j]!;
    }
  }
  const c = alloc(a, m * n);
  c.set(acc);
  return c;
}
