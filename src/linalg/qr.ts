/**
 * Householder QR of a tall matrix A [m, n] (m ≥ n): returns the thin Q [m, n] with orthonormal
 * columns and upper-triangular R [n, n], with R's diagonal made non-negative (so Q is unique
 * for full-rank A, matching LAPACK up to those signs).
 */
/** qr's signature: this reference, or the native addon's (src/native/qr.ts). */
export type Qr = (a: Float64Array | Float32Array, m: number, n: number) => { q: Float64Array; r: Float64Array };

export function qr(a: Float64Array | Float32Array, m: number, n: number): { q: Float64Array; r: Float64Array } {
  if (m < n) throw new Error(`qr: need rows >= cols, got ${m}x${n}`);
  const w = Float64Array.from(a); // working copy, becomes R in its upper triangle
  const vs = new Float64Array(m * n); // Householder vectors, column j in vs[j*m ..]
  const betas = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let norm = 0;
    for (let i = j; i < m; i++) norm += w[i * n + j]! * w[i * n + j]!;
    norm = Math.sqrt(norm);
    const x0 = w[j * n + j]!;
    const alpha = x0 >= 0 ? -norm : norm;
    const vo = j * m;
    let vnorm2 = 0;
    for (let i = j; i < m; i++) {
      const v = i === j ? x0 - alpha : w[i * n + j]!;
      vs[vo + i] = v;
      vnorm2 += v * v;
    }
    if (vnorm2 === 0 || norm === 0) {
      betas[j] = 0;
      continue;
    }
    const beta = 2 / vnorm2;
    betas[j] = beta;
    for (let c = j; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += vs[vo + i]! * w[i * n + c]!;
      const f = beta * dot;
      for (let i = j; i < m; i++) w[i * n + c] = w[i * n + c]! - f * vs[vo + i]!;
    }
  }
  // Q = H_0 H_1 ... H_{n-1} applied to the first n columns of I
  const q = new Float64Array(m * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let j = n - 1; j >= 0; j--) {
    const beta = betas[j]!;
    if (beta === 0) continue;
    const vo = j * m;
    for (let c = 0; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += vs[vo + i]! * q[i * n + c]!;
      const f = beta * dot;
      for (let i = j; i < m; i++) q[i * n + c] = q[i * n + c]! - f * vs[vo + i]!;
    }
  }
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let c = i; c < n; c++) r[i * n + c] = w[i * n + c]!;
  // non-negative diagonal
  for (let i = 0; i < n; i++) {
    if (r[i * n + i]! < 0) {
      for (let c = i; c < n; c++) r[i * n + c] = -r[i * n + c]!;
      for (let row = 0; row < m; row++) q[row * n + i] = -q[row * n + i]!;
    }
  }
  return { q, r };
}
