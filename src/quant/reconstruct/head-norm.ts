/**
 * Qwen3's q_norm / k_norm: RMSNorm of every head's row of q or k (before RoPE) with one weight w of length
 * head_dim shared by the heads (Qwen3RMSNorm on q.view(…, heads, head_dim)). On x [tokens, heads·headDim]
 * (token-major) this is RMSNorm of the tokens·heads rows of length headDim:
 *
 *   y_{t,h} = w ⊙ x_{t,h} · r_{t,h},  r_{t,h} = 1/√(mean(x_{t,h}²) + ε)
 *   ∂L/∂x_{t,h} = r·(w ⊙ g) − r³·x_{t,h}·(Σ_j w_j g_j x_{t,h,j}) / headDim     (w fixed)
 */
import type { Arr } from './gemm.js';
import { rmsNormBackward, rmsNormForward } from './rmsnorm.js';

export interface HeadNormCache<T extends Arr> {
  /** the input (pre-norm) */
  x: T;
  /** r per (token, head) row */
  inv: Float64Array;
}

/** y (a new array) and the cache of the backward. */
export function headNormForward<T extends Arr>(x: T, tokens: number, heads: number, headDim: number, w: Arr, eps: number): { y: T; cache: HeadNormCache<T> } {
  const { y, inv } = rmsNormForward(x, tokens * heads, headDim, w, eps);
  return { y, cache: { x, inv } };
}

/** ∂L/∂x for g = ∂L/∂y. */
export function headNormBackward<T extends Arr>(g: Arr, tokens: number, heads: number, headDim: number, w: Arr, cache: HeadNormCache<T>): T {
  return rmsNormBackward(cache.x, g, tokens * heads, headDim, w, cache.inv);
}
