/**
 * Float building blocks of the decoder forward pass on row-major Float32Arrays:
 * GEMM with a [out, in] weight, RMSNorm, activations, softmax helpers.
 * Accumulation is in float64 (JS numbers); results are stored as float32.
 */
import { gemmNT } from '../linalg/js-gemm.js';

/**
 * C[m, n] = A[m, k] · W[n, k]ᵀ (nn.Linear layout), optionally accumulated into `out`.
 * Blocked over 4 rows of A so each row of W is loaded once per 4 output rows.
 */
export function matmulTransB(a: Float32Array, m: number, k: number, w: Float32Array, n: number,
  out?: Float32Array, accumulate = false): Float32Array {
  return gemmNT(a, w, m, k, n, out, accumulate);
}

/** RMSNorm per row (as transformers' LlamaRMSNorm): y = w ⊙ x / sqrt(mean(x²) + eps). */
export function rmsNormRows(x: Float32Array, rows: number, cols: number, weight: Float32Array | undefined,
  eps: number, out?: Float32Array): Float32Array {
  const y = out ?? new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let ss = 0;
    for (let j = 0; j < cols; j++) {
      const v = x[o + j]!;
      ss += v * v;
    }
    const inv = 1 / Math.sqrt(Math.fround(ss / cols) + eps);
    if (weight === undefined) {
      for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! * inv;
    } else {
      // transformers rounds the normalised value to float32 before the weight multiply.
      for (let j = 0; j < cols; j++) y[o + j] = weight[j]! * Math.fround(x[o + j]! * inv);
    }
  }
  return y;
}

export type HiddenAct = 'silu' | 'gelu_new' | 'gelu' | 'gelu_pytorch_tanh' | 'relu';

/** erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit), enough for float32 GELU. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}

export function activation(kind: HiddenAct): (x: number) => number {
  switch (kind) {
    case 'silu':
      return (x) => x / (1 + Math.exp(-x));
    case 'relu':
      return (x) => (x > 0 ? x : 0);
    case 'gelu':
      return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
  }
}

/** In place: gate[i] = act(gate[i]) · up[i] (SwiGLU and friends). */
export function gatedActivation(gate: Float32Array, up: Float32Array, act: (x: number) => number): Float32Array {
  for (let i = 0; i < gate.length; i++) gate[i] = Math.fround(act(gate[i]!)) * up[i]!;
  return gate;
}

/** In place: x[i] = act(x[i]). */
export function applyActivation(x: Float32Array, act: (x: number) => number): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] = act(x[i]!);
  return x;
}

/** In place: x[r, :] = x[r, :]! + bias. */
export function addBiasRows(x: Float32Array, rows: number, cols: number, bias: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) x[o + j] = x[o + j]! + bias[j]!;
  }
}

/** In place: a += b. */
export function addInPlace(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}

/** Embedding lookup: rows of `table` [vocab, hidden] for ids → [ids.length, hidden]. */
export function gatherRows(table: Float32Array, vocab: number, hidden: number, ids: ArrayLike<number>,
  file?: string): Float32Array {
  const out = new Float32Array(ids.length * hidden);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new RangeError(`token id ${id} at position ${t} is outside the vocabulary [0, ${vocab})${file ? ` of ${file}` : ''}`);
    }
    out.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden);
  }
  return out;
}

/** log Σ exp(row) − row[target], in float64. */
export function negativeLogLikelihood(logits: Float32Array, offset: number, vocab: number, target: number): number {
  let max = -Infinity;
  for (let j = 0; j < vocab; j++) {
    const v = logits[offset + j]!;
    if (v > max) max = v;
  }
  let sum = 0;
  for (let j = 0; j < vocab; j++) sum += Math.exp(logits[offset + j]! - max);
  return max + Math.log(sum) - logits[offset + target]!;
}
