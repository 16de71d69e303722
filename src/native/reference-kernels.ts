/**
 * Pure-TypeScript reference implementations of the three packed GEMMs of the native addon
 * (src/native/kernels.ts, NativeKernels). Every result is an exact integer: the products are
 * ±1·int8 or ternary·(±1 or ternary) and the sums are accumulated in Int32.
 *
 * Bit layout (bwq-packed-v1, docs/FORMATS.md): a row of K values occupies ceil(K/32) uint32
 * words; bit j (LSB first) of word w holds element 32·w + j. Binary weights: bit = 1 iff +1.
 * Ternary operands: two planes, `plus` (bit = 1 iff +1) and `minus` (bit = 1 iff −1).
 * Padding bits (k ≥ K) must be 0 in `plus`/`minus`; in binary weights they are ignored here.
 *
 * Used as the fallback backend when the addon is not built, and as the reference in tests.
 */

import { unpackSignRows, wordsPerRow } from '../quant/pack.js';

export { wordsPerRow };

/** The GEMM part of NativeKernels (D's interface), which this module and the addon share. */
export interface IntegerGemmKernels {
  /** Y[m,n] = Σ_k t[m,k]·B[n,k], t ternary as plus/minus planes [M, ceil(K/32)], B binary [N, ceil(K/32)]. */
  ternaryBinaryGemm(plus: Uint32Array, minus: Uint32Array, weights: Uint32Array, m: number, n: number, k: number,
    out?: Int32Array): Int32Array;
  /** Y[m,n] = Σ_k a[m,k]·B[n,k], a int8 codes [M,K] row-major, B binary [N, ceil(K/32)]. */
  int8BinaryGemm(a: Int8Array, weights: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array;
  /** Y[m,n] = Σ_k t1[m,k]·t2[n,k], both ternary as plus/minus planes. */
  ternaryTernaryGemm(aPlus: Uint32Array, aMinus: Uint32Array, bPlus: Uint32Array, bMinus: Uint32Array,
    m: number, n: number, k: number, out?: Int32Array): Int32Array;
}

/** A kernel set with the descriptive fields of NativeKernels. */
export interface ReferenceKernels extends IntegerGemmKernels {
  readonly backend: 'cpu';
  readonly cpuFeatures: string;
  readonly gpu: boolean;
  readonly notice: string | undefined;
  readonly residentWeights: false;
}

/** Number of set bits of a 32-bit word. */
export function popcount32(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

function checkShapes(what: string, arrays: ReadonlyArray<[string, ArrayLike<number>, number]>, m: number, n: number,
  k: number): void {
  for (const v of [m, n, k]) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${what}: bad dimensions m=${m} n=${n} k=${k}`);
  }
  for (const [name, array, expected] of arrays) {
    if (array.length < expected) {
      throw new RangeError(`${what}: ${name} has ${array.length} elements, needs ${expected} (m=${m} n=${n} k=${k})`);
    }
  }
}

function output(out: Int32Array | undefined, size: number, what: string): Int32Array {
  if (out === undefined) return new Int32Array(size);
  if (out.length < size) throw new RangeError(`${what}: out has ${out.length} elements, needs ${size}`);
  return out;
}

/** Mask of the valid bits of the last word of a row of K bits. */
function lastWordMask(k: number): number {
  const r = k & 31;
  return r === 0 ? 0xffffffff : ((1 << r) - 1) >>> 0;
}

/** Y = T·Bᵀ with T ternary (planes), B binary: Σ t·b = pc(p&w) − pc(p&~w) − pc(m&w) + pc(m&~w). */
export function referenceTernaryBinaryGemm(plus: Uint32Array, minus: Uint32Array, weights: Uint32Array, m: number,
  n: number, k: number, out?: Int32Array): Int32Array {
  const words = wordsPerRow(k);
  checkShapes('ternaryBinaryGemm', [['plus', plus, m * words], ['minus', minus, m * words],
    ['weights', weights, n * words]], m, n, k);
  const y = output(out, m * n, 'ternaryBinaryGemm');
  const last = lastWordMask(k);
  for (let i = 0; i < m; i++) {
    const ao = i * words;
    for (let j = 0; j < n; j++) {
      const bo = j * words;
      let acc = 0;
      for (let w = 0; w < words; w++) {
        const mask = w === words - 1 ? last : 0xffffffff;
        const p = plus[ao + w]! & mask;
        const q = minus[ao + w]! & mask;
        const b = weights[bo + w]!;
        const nb = ~b;
        acc += popcount32(p & b) - popcount32(p & nb) - popcount32(q & b) + popcount32(q & nb);
      }
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** Y = A·Bᵀ with A int8 codes, B binary: Σ a·b = 2·Σ_{b=+1} a − Σ a. */
export function referenceInt8BinaryGemm(a: Int8Array, weights: Uint32Array, m: number, n: number, k: number,
  out?: Int32Array): Int32Array {
  const words = wordsPerRow(k);
  checkShapes('int8BinaryGemm', [['a', a, m * k], ['weights', weights, n * words]], m, n, k);
  const y = output(out, m * n, 'int8BinaryGemm');
  // Unpack the weights once to ±1 so the inner loop is a plain integer dot product.
  const signs = unpackSignRows(weights.subarray(0, n * words), n, k);
  for (let i = 0; i < m; i++) {
    const ao = i * k;
    for (let j = 0; j < n; j++) {
      const bo = j * k;
      let acc = 0;
      for (let kk = 0; kk < k; kk++) acc += a[ao + kk]! * signs[bo + kk]!;
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** Y = T1·T2ᵀ with both ternary: Σ t1·t2 = pc(p1&p2) + pc(m1&m2) − pc(p1&m2) − pc(m1&p2). */
export function referenceTernaryTernaryGemm(aPlus: Uint32Array, aMinus: Uint32Array, bPlus: Uint32Array,
  bMinus: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array {
  const words = wordsPerRow(k);
  checkShapes('ternaryTernaryGemm', [['aPlus', aPlus, m * words], ['aMinus', aMinus, m * words],
    ['bPlus', bPlus, n * words], ['bMinus', bMinus, n * words]], m, n, k);
  const y = output(out, m * n, 'ternaryTernaryGemm');
  const last = lastWordMask(k);
  for (let i = 0; i < m; i++) {
    const ao = i * words;
    for (let j = 0; j < n; j++) {
      const bo = j * words;
      let acc = 0;
      for (let w = 0; w < words; w++) {
        const mask = w === words - 1 ? last : 0xffffffff;
        const p1 = aPlus[ao + w]! & mask;
        const m1 = aMinus[ao + w]! & mask;
        const p2 = bPlus[bo + w]!;
        const m2 = bMinus[bo + w]!;
        acc += popcount32(p1 & p2) + popcount32(m1 & m2) - popcount32(p1 & m2) - popcount32(m1 & p2);
      }
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** The reference kernels as a NativeKernels-shaped object (backend 'cpu', no addon). */
export function createReferenceKernels(notice?: string): ReferenceKernels {
  return {
    backend: 'cpu',
    cpuFeatures: 'js-reference',
    gpu: false,
    notice,
    residentWeights: false,
    ternaryBinaryGemm: referenceTernaryBinaryGemm,
    int8BinaryGemm: referenceInt8BinaryGemm,
    ternaryTernaryGemm: referenceTernaryTernaryGemm,
  };
}
