/**
 * Finite-difference helpers for the reconstruction gradient checks (float64 central differences).
 */
import { Rng } from '../../../src/linalg/random.js';

export function randn(rng: Rng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Central differences of a scalar function of `param` (perturbed in place) at the given indices.
 */
export async function numericGrad(param: Float64Array, indices: readonly number[], f: () => Promise<number> | number, eps = 1e-6): Promise<number[]> {
  const out: number[] = [];
  for (const i of indices) {
    const v = param[i]!;
    param[i] = v + eps;
    const up = await f();
    param[i] = v - eps;
    const down = await f();
    param[i] = v;
    out.push((up - down) / (2 * eps));
  }
  return out;
}

/** max |a − b| / max(max|b|, floor): the relative error of a gradient check. */
export function relError(a: readonly number[], b: readonly number[], floor = 1e-8): number {
  let num = 0;
  let den = floor;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

/** `count` distinct indices in [0, n), seeded. */
export function pick(rng: Rng, n: number, count: number): number[] {
  return Array.from(rng.sample(n, Math.min(n, count)));
}
