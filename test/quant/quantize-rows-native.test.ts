/** The calibration's fake activation quantizers on the CPU kernels' threads (native/ops/actquant/actquant_cpu.cpp
 *  quantize_rows) equal the reference (src/quant/quantizers.ts quantizeRowsInto) bit for bit. */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { nativeQuantizeRows } from '../../src/native/act-quant.js';
import { candidateQuantizers } from '../../src/quant/act-calib.js';
import { quantizeRowsInto } from '../../src/quant/quantizers.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { runtimeAvailable } from '../../src/eval/backend.js';

const cols = 97;
const rng = new Rng(23);
/** Gaussian rows with outlier channels, an all-zero row, a row of ±0 and ties of the int grid (k + 0.5 steps). */
function rows(): Float32Array {
  const n = 40;
  const x = Float32Array.from({ length: n * cols }, (_, i) => rng.normal() * (i % cols % 11 === 0 ? 9 : 1));
  x.fill(0, 3 * cols, 4 * cols);
  for (let j = 0; j < cols; j++) x[4 * cols + j] = j % 2 === 0 ? -0 : 0;
  // row 5: max |x| = 31 so the int6 step at clip 1 is exactly 1: every k + 0.5 is a tie
  for (let j = 0; j < cols; j++) x[5 * cols + j] = j === 0 ? 31 : ((j % 13) - 6) + 0.5;
  return x;
}

describe('native calibration quantizers', () => {
  it.runIf(runtimeAvailable())('equal the reference bit for bit on every kind and grid value', () => {
    const native = nativeQuantizeRows();
    expect(native).toBeDefined();
    const x = rows();
    const quantizers: ActivationQuantizer[] = [
      { kind: 'none' }, { kind: 'binary' },
      ...candidateQuantizers('int', 6).map((c) => c.quantizer), ...candidateQuantizers('int', 4).map((c) => c.quantizer),
      { kind: 'int', bits: 8, clipRatio: 1 }, ...candidateQuantizers('ternary', 0).map((c) => c.quantizer),
    ];
    for (const q of quantizers) {
      const want = new Float32Array(x.length);
      quantizeRowsInto(x, cols, q, want);
      const got = new Float32Array(x.length).fill(Number.NaN);
      native!(x, cols, q, got);
      // Object.is per element: -0 and +0 differ, NaN equals NaN
      const diff = Array.from(got).findIndex((v, i) => !Object.is(v, want[i]));
      expect(diff, JSON.stringify(q)).toBe(-1);
    }
    // in place, as the reference allows
    const q: ActivationQuantizer = { kind: 'int', bits: 6, clipRatio: 0.9 };
    const want = new Float32Array(x.length);
    quantizeRowsInto(x, cols, q, want);
    const inPlace = Float32Array.from(x);
    native!(inPlace, cols, q, inPlace);
    expect(Array.from(inPlace)).toEqual(Array.from(want));
    // the tie row at step 1: round half to even, as the reference
    const ties = new Float32Array(x.length);
    native!(x, cols, { kind: 'int', bits: 6, clipRatio: 1 }, ties);
    expect(Array.from(ties.subarray(5 * cols + 1, 5 * cols + 4))).toEqual([-4, -4, -2]);
    expect(() => native!(x, cols + 1, q, want)).toThrow(/not a multiple of 98/);
  });
});
