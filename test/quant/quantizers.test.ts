import { beforeAll, describe, expect, it } from 'vitest';
import { quantizeRows, roundHalfEven } from '../../src/quant/quantizers.js';
import { ternaryCodeRows } from '../../src/native/activation-codes.js';
import { binarizeRows, binarizationError, dequantizeBinary } from '../../src/quant/binarize.js';
import { kroneckerFactors, rotateRows } from '../../src/quant/kronecker.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { loadQuantReference, type RefTensor } from './reference-fixture.js';
import { procrustes, svd } from '../../src/linalg/index.js';

let ref: Map<string, RefTensor>;
beforeAll(async () => {
  ref = await loadQuantReference();
});
const get = (name: string): RefTensor => {
  const t = ref.get(name);
  if (t === undefined) throw new Error(`fixture lacks ${name}`);
  return t;
};

describe('roundHalfEven', () => {
  it('rounds ties to even like torch.round', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, -3.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, 3, -4]);
  });
});

describe('activation quantizers vs PyTorch float32 reference', () => {
  const cases: Array<[string, ActivationQuantizer]> = [
    ['int6_clip1', { kind: 'int', bits: 6, clipRatio: 1 }],
    ['int6_clip0.9', { kind: 'int', bits: 6, clipRatio: 0.9 }],
    ['int8_clip0.85', { kind: 'int', bits: 8, clipRatio: 0.85 }],
    ['int4_clip0.75', { kind: 'int', bits: 4, clipRatio: 0.75 }],
    ['ternary_0.7', { kind: 'ternary', thresholdRatio: 0.7 }],
    ['ternary_1.2', { kind: 'ternary', thresholdRatio: 1.2 }],
    ['binary', { kind: 'binary' }],
  ];
  for (const [name, q] of cases) {
    it(name, () => {
      const x = get('x');
      const cols = x.shape[1]!;
      const got = quantizeRows(Float32Array.from(x.data), cols, q);
      const want = get(name).data;
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (Math.abs(want[i]!) + 1e-6));
      expect(worst).toBeLessThan(2e-6);
    });
  }

  it('int6 with clip 1 hits exact ties and rounds them to even (row 6)', () => {
    const x = get('x');
    const cols = x.shape[1]!;
    const got = quantizeRows(Float32Array.from(x.data.subarray(6 * cols, 7 * cols)), cols, { kind: 'int', bits: 6, clipRatio: 1 });
    expect(Array.from(got.subarray(0, 9))).toEqual([0, 2, 2, -0, -2, -2, 4, 4, 31]);
    expect(Array.from(get('int6_clip1').data.subarray(6 * cols, 6 * cols + 9))).toEqual([0, 2, 2, -0, -2, -2, 4, 4, 31]);
  });

  it('int codes lie on the grid and an all-zero row stays zero', () => {
    const x = Float32Array.from(get('x').data);
    const q = quantizeRows(x, 48, { kind: 'int', bits: 4, clipRatio: 0.75 });
    for (let r = 0; r < 16; r++) {
      let amax = 0;
      for (let j = 0; j < 48; j++) amax = Math.max(amax, Math.abs(x[r * 48 + j]!));
      const s = Math.fround(Math.fround(0.75 * amax) / 7);
      for (let j = 0; j < 48; j++) {
        const code = q[r * 48 + j]! / (amax === 0 ? 1 : s);
        expect(Math.abs(code - Math.round(code))).toBeLessThan(1e-4);
        expect(Math.abs(code)).toBeLessThanOrEqual(7 + 1e-6);
      }
    }
    for (let j = 0; j < 48; j++) expect(q[5 * 48 + j]).toBe(0);
  });

  it('ternary codes (native backend) agree with the ternary quantizer', () => {
    const x = Float32Array.from(get('x').data);
    const { codes, scales } = ternaryCodeRows(x, x.length / 48, 48, 0.7);
    const q = get('ternary_0.7').data;
    for (let r = 0; r < 16; r++) for (let j = 0; j < 48; j++) {
      expect(Math.abs(codes[r * 48 + j]! * scales[r]! - q[r * 48 + j]!)).toBeLessThan(1e-5 * (scales[r]! + 1e-6));
    }
  });
});

describe('Kronecker rotation vs torch.kron', () => {
  it('x (R1 ⊗ R2) computed as R1ᵀ X R2', () => {
    const r1 = get('kron_r1').data, r2 = get('kron_r2').data, x = get('kron_x').data;
    const got = rotateRows(Float64Array.from(x), 5, r1, 4, r2, 6);
    const want = get('kron_xr').data;
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-12);
  });
  it('factors: R2 the largest divisor ≤ 128 from 256 to 128², balanced elsewhere', () => {
    expect(kroneckerFactors(256)).toEqual({ a: 2, b: 128 });
    expect(kroneckerFactors(768)).toEqual({ a: 6, b: 128 });
    expect(kroneckerFactors(4096)).toEqual({ a: 32, b: 128 });
    expect(kroneckerFactors(25600)).toEqual({ a: 160, b: 160 });
    expect(kroneckerFactors(24)).toEqual({ a: 4, b: 6 });
    expect(kroneckerFactors(11008)).toEqual({ a: 86, b: 128 });
    expect(kroneckerFactors(13)).toEqual({ a: 1, b: 13 });
  });
});

describe('SVD and Procrustes vs torch.linalg', () => {
  it('singular values of a 40×24 matrix', () => {
    const a = get('svd_a');
    const s = svd(a.data, 40, 24).s;
    const want = get('svd_s').data;
    for (let i = 0; i < 24; i++) expect(Math.abs(s[i]! - want[i]!)).toBeLessThan(1e-10 * want[0]!);
  });
  it('Procrustes U Vᵀ of a 12×12 matrix', () => {
    const r = procrustes(Float64Array.from(get('procrustes_m').data), 12);
    const want = get('procrustes_r').data;
    for (let i = 0; i < want.length; i++) expect(Math.abs(r[i]! - want[i]!)).toBeLessThan(1e-10);
  });
});

describe('binarizeRows', () => {
  it('sign with 0 → +1 and mean-|w| scales; error identity ‖w‖² − K α²', () => {
    const w = Float32Array.from([0.5, -1, 0, 2.5, -3, 1, 1, -1]);
    const { signs, scales } = binarizeRows(w, 2, 4);
    expect(Array.from(signs)).toEqual([1, -1, 1, 1, -1, 1, 1, -1]);
    expect(Array.from(scales)).toEqual([1, 1.5]);
    const deq = dequantizeBinary(signs, scales, 2, 4);
    let direct = 0;
    for (let i = 0; i < 8; i++) direct += (w[i]! - deq[i]!) ** 2;
    expect(binarizationError(w, 2, 4)).toBeCloseTo(direct, 12);
    expect(direct).toBeCloseTo(0.25 + 0 + 1 + 2.25 + (2.25 + 0.25 + 0.25 + 0.25), 12);
  });
});
