/**
 * Thin SVD by one-sided Jacobi (Hestenes) rotations: A [m, n] = U diag(S) Vᵀ with S sorted
 * descending, U [m, p], V [n, p], p = min(m, n). Accurate to working precision; O(m n² · sweeps),
 * meant for small matrices (rotations, sketches). Wide matrices are handled through Aᵀ.
 */
import { transpose } from './dense.js';

export interface Svd {
  u: Float64Array; // [m, p]
  s: Float64Array; // [p]
  v: Float64Array; // [n, p]
  m: number;
  n: number;
  p: number;
}

export function svd(a: Float64Array | Float32Array, m: number, n: number, options: { maxSweeps?: number; tol?: number } = {}): Svd {
  if (m < n) {
    const t = svd(transpose(a, m, n), n, m, options);
    return { u: t.v, s: t.s, v: t.u, m, n, p: t.p };
  }
  const maxSweeps = options.maxSweeps ?? 60;
  const tol = options.tol ?? 1e-15;
  // Work column-major for cache-friendly column access: col j of A at g[j*m ..]
  const g = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) g[j * m + i] = a[i * n + j]!;
  const vt = new Float64Array(n * n); // column-major V: column j at vt[j*n ..]
  for (let j = 0; j < n; j++) vt[j * n + j] = 1;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const po = p * m;
      for (let q = p + 1; q < n; q++) {
        const qo = q * m;
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = g[po + i]!;
          const y = g[qo + i]!;
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta === 0 ? 1 : zeta) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        rotateRowPair(g, po, qo, m, c, s);
        rotateRowPair(vt, p * n, q * n, n, c, s);
      }
    }
    if (!rotated) break;
  }
  const norms = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += g[j * m + i]! * g[j * m + i]!;
    norms[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const u = new Float64Array(m * n);
  const v = new Float64Array(n * n);
  const s = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const j = order[k]!;
    const sigma = norms[j]!;
    s[k] = sigma;
    for (let i = 0; i < n; i++) v[i * n + k] = vt[j * n + i]!;
    if (sigma > 0) for (let i = 0; i < m; i++) u[i * n + k] = g[j * m + i]! / sigma;
  }
  completeZeroColumns(u, m, n, s);
  return { u, s, v, m, n, p: n };
}

/** Columns of U for zero singular values are filled by Gram–Schmidt so U keeps orthonormal columns. */
function completeZeroColumns(u: Float64Array, m: number, n: number, s: Float64Array): void {
  for (let k = 0; k < n; k++) {
    if (s[k]! > 0) continue;
    for (let e = 0; e < m; e++) {
      const col = new Float64Array(m);
      col[e] = 1;
      for (let j = 0; j < n; j++) {
        if (j === k || (s[j]! === 0 && j > k)) continue;
        let d = 0;
        for (let i = 0; i < m; i++) d += u[i * n + j]! * col[i]!;
        for (let i = 0; i < m; i++) col[i] = col[i]! - d * u[i * n + j]!;
      }
      let nn = 0;
      for (let i = 0; i < m; i++) nn += col[i]! * col[i]!;
      nn = Math.sqrt(nn);
      if (nn > 1e-8) {
        for (let i = 0; i < m; i++) u[i * n + k] = col[i]! / nn;
        break;
      }
    }
  }
}

/** Givens rotation of two rows of length `len` at offsets `a` and `b`: (x, y) ← (c·x − s·y, s·x + c·y). */
function rotateRowPair(rows: Float64Array, a: number, b: number, len: number, c: number, s: number): void {
  for (let i = 0; i < len; i++) {
    const x = rows[a + i]!;
    const y = rows[b + i]!;
    rows[a + i] = c * x - s * y;
    rows[b + i] = s * x + c * y;
  }
}
