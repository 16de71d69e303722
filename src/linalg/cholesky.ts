/**
 * Cholesky factorisation of symmetric positive definite matrices (row-major Float64Array, n × n) and
 * what GPTQ-style error compensation needs from it: H⁻¹ and its upper Cholesky factor U (H⁻¹ = UᵀU).
 */

/** Lower-triangular L with A = L Lᵀ; throws when A is not (numerically) positive definite. */
export function choleskyLower(a: Float64Array, n: number): Float64Array {
  if (a.length !== n * n) throw new Error(`choleskyLower: ${a.length} elements for [${n}, ${n}]`);
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j]!;
    for (let k = 0; k < j; k++) d -= l[j * n + k]! * l[j * n + k]!;
    if (!(d > 0)) throw new Error(`choleskyLower: matrix is not positive definite (pivot ${j} is ${d})`);
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j]!;
      const ri = i * n;
      const rj = j * n;
      for (let k = 0; k < j; k++) s -= l[ri + k]! * l[rj + k]!;
      l[ri + j] = s / ljj;
    }
  }
  return l;
}

/** L⁻¹ of a lower-triangular L (forward substitution column by column). */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / l[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += l[i * n + k]! * inv[k * n + j]!;
      inv[i * n + j] = -s / l[i * n + i]!;
    }
  }
  return inv;
}

/** A⁻¹ of a symmetric positive definite A: (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹. */
export function inverseSpd(a: Float64Array, n: number): Float64Array {
  const li = invertLower(choleskyLower(a, n), n);
  const out = new Float64Array(n * n);
  // out[i][j] = Σ_k li[k][i] li[k][j], k ≥ max(i, j)
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += li[k * n + i]! * li[k * n + j]!;
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/** Upper-triangular U with H⁻¹ = UᵀU (GPTQ's `cholesky(cholesky_inverse(cholesky(H)), upper=True)`), and H⁻¹. */
export function upperCholeskyOfInverse(h: Float64Array, n: number): { u: Float64Array; inverse: Float64Array } {
  const inverse = inverseSpd(h, n);
  const l = choleskyLower(inverse, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = l[j * n + i]!;
  return { u, inverse };
}
