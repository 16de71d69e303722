/**
 * Activation quantization into integer codes, per row (token) of a row-major [rows, cols]
 * matrix, exactly as src/quant/recipe.ts defines the quantizers. The simulated model computes
 * q(x) = s · code in float32; here the codes and the per-row scale s are kept apart so the
 * packed GEMMs can work on the codes and s is applied once to the integer sum.
 *
 * Float32 semantics: every intermediate that the recipe defines (max, mean, s, x/s, Δ) is
 * rounded to float32 (Math.fround) so the codes agree with a float32 graph except where a
 * reduction's summation order moves a value across a rounding boundary.
 */
import type { ActivationQuantizer } from '../quant/recipe.js';
import { intStep, meanMagnitude, roundHalfEven, ternaryThreshold } from '../quant/quantizers.js';
import { packTernaryRows } from '../quant/pack.js';

/** int / binary quantizers with codes that fit int8: x̂[r, j] = scales[r] · codes[r, j]. */
export interface Int8Codes {
  readonly kind: 'int8';
  readonly codes: Int8Array;
  readonly scales: Float32Array;
}

/** ternary quantizer: x̂[r, j] = scales[r] · t[r, j], t ∈ {−1, 0, +1} as codes and as bit-planes. */
export interface TernaryCodes {
  readonly kind: 'ternary';
  readonly codes: Int8Array;
  readonly plus: Uint32Array;
  readonly minus: Uint32Array;
  readonly scales: Float32Array;
}

/**
 * int quantizer with 9–15 bits: code = 256·high + low with low ∈ [−128, 127] and |high| ≤ 64, so
 * Σ_k code·B = 256·Σ_k high·B + Σ_k low·B from two int8 kernel calls (still exact).
 */
export interface Int8PairCodes {
  readonly kind: 'int8pair';
  readonly high: Int8Array;
  readonly low: Int8Array;
  readonly scales: Float32Array;
}

/** `none`, or an int quantizer wider than 15 bits: the (fake-quantized) float values. */
export interface FloatValues {
  readonly kind: 'float';
  readonly values: Float32Array;
}

export type ActivationCodes = Int8Codes | Int8PairCodes | TernaryCodes | FloatValues;

/** The int quantizer's codes and scales; codes in [−qmax, qmax], qmax = 2^(bits−1) − 1. */
export function intCodeRows<T extends Int8Array | Int32Array = Int32Array>(x: Float32Array, rows: number, cols: number,
  bits: number, clipRatio: number, out?: T): { codes: T; scales: Float32Array } {
  if (!Number.isInteger(bits) || bits < 2 || bits > 24) throw new RangeError(`int quantizer: bad bit width ${bits}`);
  if (out instanceof Int8Array && bits > 8) throw new RangeError(`int quantizer: ${bits}-bit codes do not fit int8`);
  const qmax = 2 ** (bits - 1) - 1;
  const codes = (out ?? new Int32Array(rows * cols)) as T;
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let m = 0;
    for (let j = 0; j < cols; j++) {
      const a = Math.abs(x[o + j]!);
      if (a > m) m = a;
    }
    const s = intStep(m, qmax, clipRatio);
    scales[r] = s;
    for (let j = 0; j < cols; j++) {
      let q = roundHalfEven(Math.fround(x[o + j]! / s));
      if (q > qmax) q = qmax;
      else if (q < -qmax) q = -qmax;
      codes[o + j] = q;
    }
  }
  return { codes, scales };
}

/** The ternary quantizer's codes (and bit-planes) and scales. */
export function ternaryCodeRows(x: Float32Array, rows: number, cols: number, thresholdRatio: number): TernaryCodes {
  const codes = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.abs(x[o + j]!);
    const delta = ternaryThreshold(sum, cols, thresholdRatio);
    let kept = 0;
    let count = 0;
    for (let j = 0; j < cols; j++) {
      const v = x[o + j]!;
      const a = Math.abs(v);
      if (a > delta) {
        kept += a;
        count++;
        codes[o + j] = v > 0 ? 1 : -1;
      }
    }
    scales[r] = meanMagnitude(kept, count);
  }
  const { plus, minus } = packTernaryRows(codes, rows, cols);
  return { kind: 'ternary', codes, plus, minus, scales };
}

/** The binary quantizer: codes sign⁺(x) ∈ {−1, +1} (0 → +1), scale mean|x|. */
export function binaryCodeRows(x: Float32Array, rows: number, cols: number): Int8Codes {
  const codes = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const v = x[o + j]!;
      sum += Math.abs(v);
      codes[o + j] = v >= 0 || Number.isNaN(v) ? 1 : -1;
    }
    scales[r] = meanMagnitude(sum, cols);
  }
  return { kind: 'int8', codes, scales };
}

/** Quantizes every row of x with `q` into the cheapest code form the kernels take. */
export function activationCodes(x: Float32Array, rows: number, cols: number, q: ActivationQuantizer): ActivationCodes {
  switch (q.kind) {
    case 'none':
      return { kind: 'float', values: x };
    case 'binary':
      return binaryCodeRows(x, rows, cols);
    case 'ternary':
      return ternaryCodeRows(x, rows, cols, q.thresholdRatio);
    case 'int': {
      if (q.bits <= 8) {
        const { codes, scales } = intCodeRows(x, rows, cols, q.bits, q.clipRatio, new Int8Array(rows * cols));
        return { kind: 'int8', codes, scales };
      }
      const { codes, scales } = intCodeRows(x, rows, cols, q.bits, q.clipRatio);
      if (q.bits <= 15) return splitCodes(codes, scales);
      return { kind: 'float', values: dequantizeCodes(codes, scales, rows, cols) };
    }
  }
}

/** code = 256·high + low, low = ((code + 128) mod 256) − 128. */
export function splitCodes(codes: Int32Array, scales: Float32Array): Int8PairCodes {
  const high = new Int8Array(codes.length);
  const low = new Int8Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]!;
    const l = ((c + 128) & 255) - 128;
    low[i] = l;
    high[i] = (c - l) / 256;
  }
  return { kind: 'int8pair', high, low, scales };
}

function dequantizeCodes(codes: ArrayLike<number>, scales: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    const o = r * cols;
    for (let j = 0; j < cols; j++) out[o + j] = codes[o + j]! * s;
  }
  return out;
}

/** x̂ = s · code as float32 (what the simulated model feeds its float matmul). */
export function dequantize(a: ActivationCodes, rows: number, cols: number): Float32Array {
  if (a.kind === 'float') return a.values;
  if (a.kind === 'int8pair') {
    const codes = new Int32Array(a.high.length);
    for (let i = 0; i < codes.length; i++) codes[i] = 256 * a.high[i]! + a.low[i]!;
    return dequantizeCodes(codes, a.scales, rows, cols);
  }
  return dequantizeCodes(a.codes, a.scales, rows, cols);
}
