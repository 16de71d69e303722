import { describe, expect, it } from 'vitest';
import { packSignRows, packTernaryRows, unpackSignRows, unpackTernaryRows, wordsPerRow } from '../../src/quant/pack.js';
import { Rng } from '../../src/linalg/index.js';
import { loadQuantReference } from './reference-fixture.js';

describe('bwq-packed-v1 sign packing', () => {
  it('matches the PyTorch bit layout (LSB first, K = 70 not a multiple of 32)', async () => {
    const ref = await loadQuantReference();
    const signs = Int8Array.from(ref.get('pack_signs')!.data);
    const words = ref.get('pack_words')!.data;
    const packed = packSignRows(signs, 5, 70);
    expect(packed.length).toBe(5 * 3);
    expect(Array.from(packed)).toEqual(Array.from(words));
  });

  it('a hand-worked example', () => {
    // row: + - - + (then padding) → bits 0 and 3 → 0b1001 = 9
    expect(Array.from(packSignRows(Int8Array.from([1, -1, -1, 1]), 1, 4))).toEqual([9]);
    const row = new Int8Array(33).fill(-1);
    row[31] = 1;
    row[32] = 1;
    expect(Array.from(packSignRows(row, 1, 33))).toEqual([0x80000000, 1]);
  });

  it('the docs/FORMATS.md example (K = 36)', () => {
    const row = Int8Array.from([1, -1, -1, 1, ...new Array<number>(28).fill(1), 1, -1, -1, -1]);
    expect(Array.from(packSignRows(row, 1, 36))).toEqual([0xfffffff9, 0x00000001]);
  });

  it('pack → unpack is exact for many shapes', () => {
    const rng = new Rng(11);
    for (const [rows, cols] of [[1, 1], [3, 31], [4, 32], [2, 33], [7, 100], [5, 256]] as const) {
      const signs = new Int8Array(rows * cols);
      for (let i = 0; i < signs.length; i++) signs[i] = rng.next() < 0.5 ? -1 : 1;
      const packed = packSignRows(signs, rows, cols);
      expect(packed.length).toBe(rows * wordsPerRow(cols));
      expect(Array.from(unpackSignRows(packed, rows, cols))).toEqual(Array.from(signs));
      // padding bits are zero
      const rem = cols % 32;
      if (rem !== 0) for (let r = 0; r < rows; r++) expect(packed[r * wordsPerRow(cols) + wordsPerRow(cols) - 1]! >>> rem).toBe(0);
    }
  });

  it('ternary planes are disjoint and round-trip', () => {
    const rng = new Rng(12);
    const rows = 3, cols = 45;
    const t = new Int8Array(rows * cols);
    for (let i = 0; i < t.length; i++) t[i] = rng.int(3) - 1;
    const { plus, minus } = packTernaryRows(t, rows, cols);
    for (let i = 0; i < plus.length; i++) expect(plus[i]! & minus[i]!).toBe(0);
    expect(Array.from(unpackTernaryRows(plus, minus, rows, cols))).toEqual(Array.from(t));
    let popPlus = 0;
    for (const w of plus) for (let b = 0; b < 32; b++) popPlus += (w >>> b) & 1;
    expect(popPlus).toBe(Array.from(t).filter((v) => v === 1).length);
  });
});
