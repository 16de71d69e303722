/**
 * Rotary position embedding of one sequence (rotate_half pairing, as src/native/rope.ts), forward
 * and backward. Token t of a row [seq, heads·headDim] has its dims (i, i + half) of every head
 * rotated by the angle θ_{t,i}:  y_a = a·cos − b·sin, y_b = b·cos + a·sin.  The map is orthogonal,
 * so the backward is the rotation by −θ: ∂a = g_a·cos + g_b·sin, ∂b = g_b·cos − g_a·sin.
 */
import type { RopeTables } from '../../native/rope.js';
import type { Arr } from './gemm.js';

function rotate(x: Arr, seq: number, heads: number, headDim: number, tables: RopeTables, sign: 1 | -1, offset: number): void {
  const { half, cos, sin } = tables;
  for (let t = 0; t < seq; t++) {
    const to = t * half;
    for (let h = 0; h < heads; h++) {
      const o = offset + (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        const c = cos[to + i]!;
        const s = sign * sin[to + i]!;
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
  }
}

/** In place on `batch` sequences stored one after another. */
export function ropeForward(x: Arr, batch: number, seq: number, heads: number, headDim: number, tables: RopeTables): void {
  for (let b = 0; b < batch; b++) rotate(x, seq, heads, headDim, tables, 1, b * seq * heads * headDim);
}

/** In place: turns ∂L/∂y into ∂L/∂x. */
export function ropeBackward(g: Arr, batch: number, seq: number, heads: number, headDim: number, tables: RopeTables): void {
  for (let b = 0; b < batch; b++) rotate(g, seq, heads, headDim, tables, -1, b * seq * heads * headDim);
}
