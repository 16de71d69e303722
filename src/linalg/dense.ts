/**
 * Small dense row-major matrix helpers on Float64Array (and a blocked GEMM that also takes
 * Float32Array inputs). Sizes are passed explicitly; nothing here allocates arrays of arrays.
 */

export type Floats = Float32Array | Float64Array;

/** C[m,n] = A[m,k]·B[k,n] (or A·Bᵀ with transposeB, B [n,k]; or Aᵀ·B with transposeA, A [k,m]). */
export function gemm(
  a: Floats,
  b: Floats,
  m: number,
  k: number,
  n: number,
  options: { transposeA?: boolean; transposeB?: boolean; out?: Float64Array } = {},
): Float64Array {
  // Float64 copies keep the inner loops monomorphic (mixed Float32/Float64 call sites are ~5x slower).
  const a64 = a instanceof Float64Array ? a : Float64Array.from(a);
  const b64 = b instanceof Float64Array ? b : Float64Array.from(b);
  return gemm64(a64, b64, m, k, n, options);
}

function gemm64(
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  options: { transposeA?: boolean; transposeB?: boolean; out?: Float64Array },
): Float64Array {
  const c = options.out ?? new Float64Array(m * n);
  if (c.length < m * n) throw new Error(`gemm: output too small`);
  c.fill(0, 0, m * n);
  const ta = options.transposeA === true;
  const tb = options.transposeB === true;
  if (tb) {
    // dot products of rows: C[i,j] = Σ_p A[i,p]·B[j,p]
    const arow = new Float64Array(k);
    for (let i = 0; i < m; i++) {
      if (ta) for (let p = 0; p < k; p++) arow[p] = a[p * m + i]!;
      else for (let p = 0; p < k; p++) arow[p] = a[i * k + p]!;
      const ci = i * n;
      for (let j = 0; j < n; j++) {
        const bj = j * k;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let p = 0;
        for (; p + 3 < k; p += 4) {
          s0 += arow[p]! * b[bj + p]!;
          s1 += arow[p + 1]! * b[bj + p + 1]!;
          s2 += arow[p + 2]! * b[bj + p + 2]!;
          s3 += arow[p + 3]! * b[bj + p + 3]!;
        }
        for (; p < k; p++) s0 += arow[p]! * b[bj + p]!;
        c[ci + j] = s0 + s1 + s2 + s3;
      }
    }
    return c;
  }
  // axpy form: C[i,:] += A[i,p]·B[p,:]
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = ta ? a[p * m + i]! : a[i * k + p]!;
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] = c[ci + j]! + av * b[bp + j]!;
    }
  }
  return c;
}

export function transpose(a: Floats, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

/** [rows, cols] → [cols, rows], float32 in and out; in 32 × 32 tiles (2× the row-by-row loop at 11008 × 4096,
 *  whose writes stride a whole column apart). */
export function transposeF32(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const tile = 32;
  for (let r0 = 0; r0 < rows; r0 += tile) {
    const r1 = Math.min(rows, r0 + tile);
    for (let c0 = 0; c0 < cols; c0 += tile) {
      const c1 = Math.min(cols, c0 + tile);
      for (let r = r0; r < r1; r++) {
        const o = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = x[o + c]!;
      }
    }
  }
  return out;
}

/** Rows [r0, r1) × columns [c0, c1) of a row-major matrix with n columns, as a new [r1 − r0, c1 − c0] matrix. */
export function copyBlock(a: Float32Array, n: number, r0: number, r1: number, c0: number, c1: number): Float32Array {
  const w = c1 - c0;
  const out = new Float32Array((r1 - r0) * w);
  for (let r = r0; r < r1; r++) out.set(a.subarray(r * n + c0, r * n + c1), (r - r0) * w);
  return out;
}

export function identity(n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  return m;
}

export function frobeniusNorm(a: Floats): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}

/** max_ij |RᵀR − I| for a square n×n matrix R. */
export function orthogonalityError(r: Floats, n: number): number {
  const g = gemm(r, r, n, n, n, { transposeA: true });
  let worst = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(g[i * n + j]! - (i === j ? 1 : 0)));
  return worst;
}

export function toFloat64(a: Floats): Float64Array {
  return a instanceof Float64Array ? a : Float64Array.from(a);
}

export function toFloat32(a: Floats): Float32Array {
  return a instanceof Float32Array ? a : Float32Array.from(a);
}
