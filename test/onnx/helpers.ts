/** Small deterministic helpers shared by the onnx tests. */

/** Uniform [-0.5, 0.5) from a 32-bit LCG. */
export function lcg(seed: number): () => number {
  let s = (seed * 2654435761) >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** A random orthogonal n×n matrix (Gram–Schmidt on random rows, float64 then float32). */
export function randomOrthogonal(n: number, rnd: () => number): Float32Array {
  const q: number[][] = [];
  while (q.length < n) {
    const v = Array.from({ length: n }, rnd);
    for (const u of q) {
      const d = v.reduce((acc, x, i) => acc + x * u[i]!, 0);
      for (let i = 0; i < n; i++) v[i]! -= d * u[i]!;
    }
    const norm = Math.sqrt(v.reduce((acc, x) => acc + x * x, 0));
    if (norm < 1e-6) continue;
    q.push(v.map((x) => x / norm));
  }
  return Float32Array.from(q.flat());
}

/** x'[i*b + j] = Σ_{p,q} x[p*b + q] R1[p, i] R2[q, j]  (recipe.ts definition). */
export function kroneckerRotateRow(x: ArrayLike<number>, r1: Float32Array, r2: Float32Array, a: number, b: number): Float64Array {
  const out = new Float64Array(a * b);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      let s = 0;
      for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) s += x[p * b + q]! * r1[p * a + i]! * r2[q * b + j]!;
      out[i * b + j] = s;
    }
  }
  return out;
}

/** Fused weight W R with R = R1 ⊗ R2: (W R)[o, i'] = Σ_i W[o, i] R[i, i']. W is [out, n]. */
export function fuseRotation(w: Float32Array, out: number, r1: Float32Array, r2: Float32Array, a: number, b: number): Float32Array {
  const n = a * b;
  const fused = new Float32Array(out * n);
  for (let o = 0; o < out; o++) fused.set(kroneckerRotateRow(w.subarray(o * n, (o + 1) * n), r1, r2, a, b), o * n);
  return fused;
}
