// Native CPU kernels vs exact integer references (JS), on odd shapes, every CPU code path and 1/2 threads.
import { afterAll, describe, expect, it } from 'vitest';
import { BwqError } from '../../src/errors.js';
import {
  loadNativeKernels, nativeCpuInfo, setNativeCpuLevel, setNativeThreads,
} from '../../src/native/kernels.js';
import { packSignRows, packTernaryRows } from '../../src/quant/pack.js';

/** xorshift32: deterministic test data. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s;
  };
}

function randomTernary(r: () => number, len: number): Int8Array {
  const t = new Int8Array(len);
  for (let i = 0; i < len; i++) t[i] = (r() % 3) - 1;
  return t;
}
function randomSigns(r: () => number, len: number): Int8Array {
  const s = new Int8Array(len);
  for (let i = 0; i < len; i++) s[i] = r() & 1 ? 1 : -1;
  return s;
}
/** Reference Y[m,n] = Σ_k a[m,k]·b[n,k] in float64 (exact for these magnitudes). */
function refGemm(a: Int8Array, b: Int8Array, m: number, n: number, k: number): Int32Array {
  const y = new Int32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += a[i * k + t]! * b[j * k + t]!;
      y[i * n + j] = s;
    }
  }
  return y;
}
/** Sets padding bits (k..32·kw) of every row to junk; the kernels must ignore them in activations. */
function dirtyPadding(words: Uint32Array, rows: number, k: number, junk: number): void {
  const kw = Math.ceil(k / 32);
  if (k % 32 === 0) return;
  const pad = ~((1 << (k % 32)) - 1) >>> 0;
  for (let r = 0; r < rows; r++) words[r * kw + kw - 1] = (words[r * kw + kw - 1]! | (junk & pad)) >>> 0;
}

const MS = [1, 3, 17];
const KS = [1, 31, 33, 100, 257];
const NS = [1, 5, 70];
const kernels = loadNativeKernels({ device: 'cpu' });
const detected = nativeCpuInfo().detected;
const levels = (['scalar', 'avx2', 'avx512'] as const).slice(0, ['scalar', 'avx2', 'avx512'].indexOf(detected) + 1);

afterAll(() => {
  setNativeCpuLevel('auto');
  setNativeThreads(0);
});

describe('native CPU kernels', () => {
  it('loads with the requested device and reports its CPU path', () => {
    expect(kernels.backend).toBe('cpu');
    expect(kernels.gpu).toBe(false);
    expect(kernels.notice).toBeUndefined();
    expect(['scalar', 'avx2', 'avx512']).toContain(kernels.cpuFeatures);
    const auto = loadNativeKernels();
    if (!auto.gpu) expect(auto.notice).toMatch(/^bwq: CUDA unavailable \(.+\); using CPU kernels/);
  });

  for (const level of levels) {
    for (const threads of [1, 2]) {
      it(`match the integer reference on all shapes (${level}, ${threads} thread${threads > 1 ? 's' : ''})`, () => {
        expect(setNativeCpuLevel(level)).toBe(level);
        setNativeThreads(threads);
        const r = rng(1234 + threads * 7 + level.length);
        let checked = 0;
        for (const m of MS) for (const k of KS) for (const n of NS) {
          const t = randomTernary(r, m * k);
          const b = randomSigns(r, n * k);
          const w = packSignRows(b, n, k);
          const { plus, minus } = packTernaryRows(t, m, k);
          dirtyPadding(plus, m, k, 0x55555555);
          dirtyPadding(minus, m, k, 0xaaaaaaaa);
          const want = refGemm(t, b, m, n, k);
          expect(kernels.ternaryBinaryGemm(plus, minus, w, m, n, k)).toEqual(want);

          const a = new Int8Array(m * k);
          for (let i = 0; i < a.length; i++) a[i] = r() % 5 === 0 ? (r() & 1 ? 127 : -128) : (r() % 64) - 32;
          expect(kernels.int8BinaryGemm(a, w, m, n, k)).toEqual(refGemm(a, b, m, n, k));

          const t2 = randomTernary(r, n * k);
          const p2 = packTernaryRows(t2, n, k);
          const out = new Int32Array(m * n).fill(-999);
          const y = kernels.ternaryTernaryGemm(plus, minus, p2.plus, p2.minus, m, n, k, out);
          expect(y).toBe(out);
          expect(y).toEqual(refGemm(t, t2, m, n, k));
          checked += 3;
        }
        expect(checked).toBe(3 * MS.length * KS.length * NS.length);
      });
    }
  }

  it('match the reference on a larger shape (full vector tiles, thread pool)', () => {
    setNativeCpuLevel('auto');
    setNativeThreads(2);
    const r = rng(99);
    const m = 37, n = 131, k = 1500;
    const t = randomTernary(r, m * k);
    const b = randomSigns(r, n * k);
    const w = packSignRows(b, n, k);
    const { plus, minus } = packTernaryRows(t, m, k);
    expect(kernels.ternaryBinaryGemm(plus, minus, w, m, n, k)).toEqual(refGemm(t, b, m, n, k));
    const a = new Int8Array(m * k).map(() => (r() % 64) - 32);
    expect(kernels.int8BinaryGemm(a, w, m, n, k)).toEqual(refGemm(a, b, m, n, k));
  });

  it('satisfy exact identities: all +1 gives K, t·(−t) gives −nnz, zero K gives zeros', () => {
    const k = 77, kw = Math.ceil(k / 32);
    const ones = packSignRows(new Int8Array(2 * k).fill(1), 2, k);
    const plus = packSignRows(new Int8Array(k).fill(1), 1, k);
    expect(Array.from(kernels.ternaryBinaryGemm(plus, new Uint32Array(kw), ones, 1, 2, k))).toEqual([k, k]);
    expect(Array.from(kernels.ternaryBinaryGemm(new Uint32Array(kw), plus, ones, 1, 2, k))).toEqual([-k, -k]);
    // All weights −1 (no bits set): Σ a·(−1) = −Σ a.
    const a = new Int8Array(k).map((_, i) => (i % 7) - 2);
    const sum = a.reduce((s, v) => s + v, 0);
    expect(Array.from(kernels.int8BinaryGemm(a, new Uint32Array(kw), 1, 1, k))).toEqual([-sum]);
    const t = randomTernary(rng(5), 3 * k);
    const neg = t.map((v) => -v);
    const pt = packTernaryRows(t, 3, k), pn = packTernaryRows(neg, 3, k);
    const y = kernels.ternaryTernaryGemm(pt.plus, pt.minus, pn.plus, pn.minus, 3, 3, k);
    for (let i = 0; i < 3; i++) {
      let nnz = 0;
      for (let j = 0; j < k; j++) nnz += t[i * k + j] !== 0 ? 1 : 0;
      expect(y[i * 3 + i]).toBe(-nnz);
    }
    expect(Array.from(kernels.ternaryBinaryGemm(new Uint32Array(0), new Uint32Array(0), new Uint32Array(0), 2, 3, 0)))
      .toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('give ternary x ternary as half the sum of ternary x binary against s_pos and s_nonneg rows (the CUDA construction)', () => {
    const r = rng(23);
    const m = 5, n = 7, k = 77;
    const t = randomTernary(r, m * k), u = randomTernary(r, n * k);
    // rows [0, n): s_pos = +1 where u > 0; rows [n, 2n): s_nonneg = +1 where u >= 0; u = (s_pos + s_nonneg) / 2
    const signs = new Int8Array(2 * n * k);
    for (let i = 0; i < n * k; i++) {
      signs[i] = u[i]! > 0 ? 1 : -1;
      signs[n * k + i] = u[i]! >= 0 ? 1 : -1;
    }
    const { plus, minus } = packTernaryRows(t, m, k);
    const pairs = kernels.ternaryBinaryGemm(plus, minus, packSignRows(signs, 2 * n, k), m, 2 * n, k);
    const halved = new Int32Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const sum = pairs[i * 2 * n + j]! + pairs[i * 2 * n + n + j]!;
        expect(Math.abs(sum % 2)).toBe(0);
        halved[i * n + j] = sum / 2;
      }
    }
    expect(halved).toEqual(refGemm(t, u, m, n, k));
  });

  it('reject arrays that are too short with a BwqError', () => {
    const w = new Uint32Array(4);
    expect(() => kernels.ternaryBinaryGemm(new Uint32Array(1), new Uint32Array(2), w, 2, 2, 40)).toThrow(BwqError);
    expect(() => kernels.int8BinaryGemm(new Int8Array(10), w, 1, 2, 40)).toThrow(/a has 10 elements, needs 40/);
    expect(() => kernels.int8BinaryGemm(new Int8Array(40), w, 1, 2, 40, new Int32Array(1))).toThrow(/out/);
    expect(() => kernels.int8BinaryGemm(new Int8Array(40), w, 1.5, 2, 40)).toThrow(/m must be/);
  });
});
