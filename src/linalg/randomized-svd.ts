/**
 * Rank-r truncated SVD of a larger matrix A [m, n] by a randomized range finder
 * (Halko, Martinsson & Tropp 2011): Y = (A Aᵀ)^q A Ω with Ω [n, r + p] Gaussian (seeded),
 * Q = orth(Y) (QR after every product for stability), then the exact SVD of the small
 * B = Qᵀ A [(r + p), n]; U = Q U_B. Returns the leading `rank` triplets (plus the rest of the
 * sketch's singular values in `sAll`, useful for thresholds).
 * `basis` (orthonormal or not, [m, c]) is appended to the sketch before the final
 * orthonormalisation, so span(Q) contains span(basis): a warm start that makes the result the exact
 * SVD of A projected on a subspace that holds the previous estimate (PSP's monotone L-step).
 * When the sketch would have ≥ m columns, Q = I (the SVD is exact).
 * A is float32 (the Matmul's operands; a Float64Array is rounded once); the thin factors Ω, Q (m × (r + p)) are
 * orthonormalised in float64 and handed to the products in float32.
 */
import { toFloat32 } from './dense.js';
import { jsMatmul, withKept, type Matmul } from './matmul.js';
import { qr, type Qr } from './qr.js';
import { Rng } from './random.js';
import { svd } from './svd.js';

export interface TruncatedSvd {
  u: Float64Array; // [m, rank]
  s: Float64Array; // [rank]
  v: Float64Array; // [n, rank]
  rank: number;
  /** all singular values of the sketch (length rank + oversample, descending) */
  sAll: Float64Array;
}

export interface RandomizedSvdOptions {
  oversample?: number;
  powerIterations?: number;
  seed?: number;
  matmul?: Matmul;
  /** the QR of the sketches (default src/linalg/qr.ts; the engine's native one gives the same bits) */
  qr?: Qr;
  basis?: { data: Float64Array; cols: number };
}

export async function randomizedSvd(a: Float64Array | Float32Array, m: number, n: number, rank: number, options: RandomizedSvdOptions = {}): Promise<TruncatedSvd> {
  const mm = options.matmul ?? jsMatmul;
  const a32 = toFloat32(a);
  // A is the operand of every product: copied to the products' device once (Matmul.keep)
  return withKept(mm, [a32], () => sketchedSvd(a32, m, n, rank, mm, options.qr ?? qr, options));
}

async function sketchedSvd(a32: Float32Array, m: number, n: number, rank: number, mm: Matmul, qr: Qr, options: RandomizedSvdOptions): Promise<TruncatedSvd> {
  const p = options.oversample ?? 8;
  const iters = options.powerIterations ?? 2;
  const extra = options.basis?.cols ?? 0;
  const l = Math.min(rank + p, m, n);
  const rng = new Rng(options.seed ?? 0);
  const omega = new Float32Array(n * l);
  for (let i = 0; i < omega.length; i++) omega[i] = rng.normal();
  let y = await mm(a32, omega, m, n, l); // [m, l]
  let q = qr(y, m, l).q;
  for (let it = 0; it < iters; it++) {
    const z = await mm(a32, Float32Array.from(q), n, m, l, { transposeA: true }); // Aᵀ Q  [n, l]
    const qz = qr(z, n, l).q;
    y = await mm(a32, Float32Array.from(qz), m, n, l);
    q = qr(y, m, l).q;
  }
  let cols = l;
  if (extra > 0) {
    cols = Math.min(l + extra, m);
    if (cols === m) {
      q = new Float64Array(m * m);
      for (let i = 0; i < m; i++) q[i * m + i] = 1;
    } else {
      const joined = new Float64Array(m * cols);
      for (let i = 0; i < m; i++) {
        for (let t = 0; t < l; t++) joined[i * cols + t] = q[i * l + t]!;
        for (let t = 0; t < extra; t++) joined[i * cols + l + t] = options.basis!.data[i * extra + t]!;
      }
      q = qr(joined, m, cols).q;
    }
  }
  const b = await mm(Float32Array.from(q), a32, cols, m, n, { transposeA: true }); // Qᵀ A [cols, n]
  const small = svd(b, cols, n); // u [cols, p], s [p], v [n, p]
  const r = Math.min(rank, small.p);
  const ub = small.u;
  const pb = small.p;
  const u = new Float64Array(m * r);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let t = 0; t < cols; t++) acc += q[i * cols + t]! * ub[t * pb + k]!;
      u[i * r + k] = acc;
    }
  }
  const v = new Float64Array(n * r);
  for (let i = 0; i < n; i++) for (let k = 0; k < r; k++) v[i * r + k] = small.v[i * pb + k]!;
  return { u, s: small.s.slice(0, r), v, rank: r, sAll: small.s.slice() };
}
