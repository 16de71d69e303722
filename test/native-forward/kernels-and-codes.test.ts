/**
 * Exact integer identities of the reference kernels (against plain integer dot products of the
 * unpacked operands) and of the activation codes (s · code equals C's fake quantizer bit for bit).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { packSignRows, packTernaryRows } from '../../src/quant/pack.js';
import { quantizeRows } from '../../src/quant/quantizers.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { activationCodes, dequantize } from '../../src/native/activation-codes.js';
import { roundHalfEven } from '../../src/quant/quantizers.js';
import {
  popcount32, referenceInt8BinaryGemm, referenceTernaryBinaryGemm, referenceTernaryTernaryGemm,
} from '../../src/native/reference-kernels.js';

function randomSigns(n: number, rng: Rng): Int8Array {
  return Int8Array.from({ length: n }, () => (rng.next() < 0.5 ? -1 : 1));
}
function randomTernary(n: number, rng: Rng): Int8Array {
  return Int8Array.from({ length: n }, () => rng.int(3) - 1);
}
function dot(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, k: number): number {
  let s = 0;
  for (let i = 0; i < k; i++) s += a[ao + i]! * b[bo + i]!;
  return s;
}

describe('reference kernels', () => {
  it('popcount32 counts bits', () => {
    expect(popcount32(0)).toBe(0);
    expect(popcount32(0xffffffff)).toBe(32);
    expect(popcount32(0x80000001)).toBe(2);
    expect(popcount32(0x12345678)).toBe(13);
  });

  // K values around word boundaries, including K < 32 and K not a multiple of 32
  it.each([1, 7, 31, 32, 33, 64, 95, 130])('give exact integer sums for K = %i', (k) => {
    const rng = new Rng(1000 + k);
    const m = 5;
    const n = 6;
    const b = randomSigns(n * k, rng);
    const packedB = packSignRows(b, n, k);
    // garbage in the padding bits of the binary weights must not matter
    if (k % 32 !== 0) for (let r = 0; r < n; r++) packedB[r * Math.ceil(k / 32) + Math.ceil(k / 32) - 1] |= ~((1 << (k % 32)) - 1);
    const a8 = Int8Array.from({ length: m * k }, () => rng.int(255) - 127);
    const t = randomTernary(m * k, rng);
    const t2 = randomTernary(n * k, rng);
    const tp = packTernaryRows(t, m, k);
    const tp2 = packTernaryRows(t2, n, k);
    const y8 = referenceInt8BinaryGemm(a8, packedB, m, n, k);
    const yt = referenceTernaryBinaryGemm(tp.plus, tp.minus, packedB, m, n, k);
    const ytt = referenceTernaryTernaryGemm(tp.plus, tp.minus, tp2.plus, tp2.minus, m, n, k);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        expect(y8[i * n + j]).toBe(dot(a8, i * k, b, j * k, k));
        expect(yt[i * n + j]).toBe(dot(t, i * k, b, j * k, k));
        expect(ytt[i * n + j]).toBe(dot(t, i * k, t2, j * k, k));
      }
    }
  });

  it('reach the extreme sums ±127·K exactly', () => {
    const k = 4096;
    const a = new Int8Array(k).fill(-127);
    const w = packSignRows(new Int8Array(2 * k).fill(1).fill(-1, k), 2, k);
    expect([...referenceInt8BinaryGemm(a, w, 1, 2, k)]).toEqual([-127 * k, 127 * k]);
  });

  it('reject operands that are too short', () => {
    expect(() => referenceInt8BinaryGemm(new Int8Array(10), new Uint32Array(1), 1, 1, 33)).toThrow(/needs/);
  });
});

describe('activation codes', () => {
  const quantizers: ActivationQuantizer[] = [
    { kind: 'int', bits: 8, clipRatio: 1 }, { kind: 'int', bits: 6, clipRatio: 0.9 }, { kind: 'int', bits: 4, clipRatio: 1 },
    { kind: 'int', bits: 12, clipRatio: 1 }, { kind: 'int', bits: 15, clipRatio: 1 }, { kind: 'ternary', thresholdRatio: 0.7 }, { kind: 'ternary', thresholdRatio: 0 },
    { kind: 'binary' }, { kind: 'none' },
  ];
  it.each(quantizers.map((q) => [JSON.stringify(q), q] as const))('s·code equals quantizeRows for %s', (_, q) => {
    const rng = new Rng(7);
    const rows = 9;
    const cols = 70;
    const x = Float32Array.from({ length: rows * cols }, () => rng.normal() * (rng.next() < 0.05 ? 8 : 1));
    x.fill(0, 2 * cols, 3 * cols); // an all-zero row
    x[5 * cols + 3] = 0; // a zero inside a row (binary: +1)
    const codes = activationCodes(x, rows, cols, q);
    const expected = quantizeRows(x, cols, q);
    const got = dequantize(codes, rows, cols);
    let mismatches = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) mismatches++; // === : +0 equals −0
    expect(mismatches).toBe(0);
    expect(got.some((v) => v !== 0)).toBe(true);
    if (codes.kind === 'int8') {
      for (const c of codes.codes) expect(Math.abs(c)).toBeLessThanOrEqual(q.kind === 'int' ? 2 ** (q.bits - 1) - 1 : 1);
    }
    if (codes.kind === 'int8pair') {
      expect(q.kind === 'int' && q.bits > 8 && q.bits <= 15).toBe(true);
      for (const h of codes.high) expect(Math.abs(h)).toBeLessThanOrEqual(64);
    }
    if (q.kind === 'int' && q.bits > 8) expect(codes.kind).toBe('int8pair');
    if (codes.kind === 'ternary') {
      const planes = packTernaryRows(codes.codes, rows, cols);
      expect(codes.plus).toEqual(planes.plus);
      expect(codes.minus).toEqual(planes.minus);
    }
  });

  it('rounds half to even', () => {
    expect([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4999, 3.5].map((v) => roundHalfEven(v) + 0)).toEqual([-2, -2, 0, 0, 2, 2, 2, 4]);
    // x/s exactly on .5: 8-bit, max 127 → s = 1, x = 2.5 → code 2
    const c = activationCodes(Float32Array.of(127, 2.5, -3.5), 1, 3, { kind: 'int', bits: 8, clipRatio: 1 });
    expect(c.kind === 'int8' && [...c.codes]).toEqual([127, 2, -4]);
  });
});
