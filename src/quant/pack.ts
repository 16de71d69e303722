/**
 * bwq-packed-v1 bit packing (docs/FORMATS.md). A row of K signs becomes ceil(K/32) little-endian
 * u32 words; bit j (LSB = bit 0) of word w is 1 iff element 32·w + j is +1. Padding bits beyond K
 * are 0. Ternary rows become two such bit-planes: `plus` (t = +1) and `minus` (t = −1).
 */

export function wordsPerRow(cols: number): number {
  return Math.ceil(cols / 32);
}

export function packSignRows(signs: Int8Array, rows: number, cols: number): Uint32Array {
  if (signs.length !== rows * cols) throw new Error(`packSignRows: ${signs.length} elements for [${rows}, ${cols}]`);
  const wpr = wordsPerRow(cols);
  const out = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let w = 0; w < wpr; w++) {
      let word = 0;
      const base = w * 32;
      const end = Math.min(32, cols - base);
      for (let j = 0; j < end; j++) if (signs[o + base + j]! > 0) word |= 1 << j;
      out[r * wpr + w] = word >>> 0;
    }
  }
  return out;
}

export function unpackSignRows(packed: Uint32Array, rows: number, cols: number): Int8Array {
  const wpr = wordsPerRow(cols);
  if (packed.length !== rows * wpr) throw new Error(`unpackSignRows: ${packed.length} words for [${rows}, ${cols}]`);
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const word = packed[r * wpr + (c >>> 5)]!;
      out[r * cols + c] = (word >>> (c & 31)) & 1 ? 1 : -1;
    }
  }
  return out;
}

export function packTernaryRows(t: Int8Array, rows: number, cols: number): { plus: Uint32Array; minus: Uint32Array } {
  if (t.length !== rows * cols) throw new Error(`packTernaryRows: ${t.length} elements for [${rows}, ${cols}]`);
  const wpr = wordsPerRow(cols);
  const plus = new Uint32Array(rows * wpr);
  const minus = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = t[r * cols + c]!;
      const idx = r * wpr + (c >>> 5);
      if (v > 0) plus[idx] = (plus[idx]! | (1 << (c & 31))) >>> 0;
      else if (v < 0) minus[idx] = (minus[idx]! | (1 << (c & 31))) >>> 0;
    }
  }
  return { plus, minus };
}

export function unpackTernaryRows(plus: Uint32Array, minus: Uint32Array, rows: number, cols: number): Int8Array {
  const wpr = wordsPerRow(cols);
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const idx = r * wpr + (c >>> 5);
      const bit = c & 31;
      const p = (plus[idx]! >>> bit) & 1;
      const m = (minus[idx]! >>> bit) & 1;
      if (p && m) throw new Error(`unpackTernaryRows: element [${r}, ${c}] is set in both planes`);
      out[r * cols + c] = p ? 1 : m ? -1 : 0;
    }
  }
  return out;
}
