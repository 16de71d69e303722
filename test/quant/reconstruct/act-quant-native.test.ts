import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { nativeActQuant } from '../../../src/native/act-quant.js';
import { quantBackward, quantBackwardWith, quantForward, quantForwardWith, type CausalRows, type TrainQuantizer } from '../../../src/quant/reconstruct/act-quant.js';
import { runtimeAvailable } from '../../../src/eval/backend.js';

const quantizers: TrainQuantizer[] = [{ kind: 'int', bits: 6 }, { kind: 'int', bits: 2 }, { kind: 'ternary' }, { kind: 'levels', levels: 3 }, { kind: 'levels', levels: 15 }];
const layouts: Array<{ name: string; rows: number; cols: number; causal: CausalRows | undefined }> = [
  { name: 'dense rows', rows: 37, cols: 53, causal: undefined },
  // softmax rows of 2 sequences of 24 queries: the unmasked keys only, divided by their count or by the row length
  { name: 'causal rows (unmasked)', rows: 48, cols: 24, causal: { period: 24, slidingWindow: undefined, unmasked: true } },
  { name: 'causal rows (window)', rows: 48, cols: 24, causal: { period: 24, slidingWindow: undefined, unmasked: false } },
  { name: 'sliding window 5', rows: 48, cols: 24, causal: { period: 24, slidingWindow: 5, unmasked: true } },
];

describe.runIf(runtimeAvailable())('the reconstruction\'s activation quantizers on the CPU threads (native/ops/actquant)', () => {
  const kernels = nativeActQuant()!;
  it('are built', () => expect(kernels).toBeDefined());

  for (const layout of layouts) {
    it(`equal the TypeScript reference bit for bit, forward and backward: ${layout.name}`, () => {
      const { rows, cols, causal } = layout;
      const rng = new Rng(rows * cols);
      // values with exact ties for the roundings (multiples of 0.25 among them), zeros and negative zeros
      const x = Float32Array.from({ length: rows * cols }, (_, i) => (i % 11 === 0 ? 0.25 * Math.round(8 * rng.normal()) : i % 29 === 0 ? -0 : rng.normal()));
      const g = Float32Array.from({ length: rows * cols }, () => rng.normal());
      for (const q of quantizers) {
        for (const param of [0.7, 0.9, 0.02]) {
          const ref = quantForward(q, param, x, rows, cols, causal);
          const got = quantForwardWith(kernels, q, param, x, rows, cols, causal);
          expect(Array.from(got.out), `${q.kind} forward`).toEqual(Array.from(ref.out));
          expect(Array.from(got.rowsInfo.stat)).toEqual(Array.from(ref.rowsInfo.stat));
          expect(Array.from(got.rowsInfo.scale)).toEqual(Array.from(ref.rowsInfo.scale));
          const dxRef = Float32Array.from(g, (v) => 0.5 * v);
          const dxGot = Float32Array.from(dxRef);
          const pRef = quantBackward(q, param, x, g, rows, cols, ref.rowsInfo, dxRef, 0.75, causal);
          const pGot = quantBackwardWith(kernels, q, param, x, g, rows, cols, got.rowsInfo, dxGot, 0.75, causal);
          expect(pGot, `${q.kind} parameter gradient`).toBe(pRef);
          expect(Array.from(dxGot), `${q.kind} input gradient`).toEqual(Array.from(dxRef));
        }
      }
    });
  }

  it('the reference answers for float64 rows (the finite-difference tests) and for float rows', () => {
    const x = Float64Array.from({ length: 12 }, (_, i) => i - 5.5);
    expect(Array.from(quantForwardWith(kernels, { kind: 'ternary' }, 0.7, x, 3, 4).out)).toEqual(Array.from(quantForward({ kind: 'ternary' }, 0.7, x, 3, 4).out));
    const f = Float32Array.from(x);
    expect(Array.from(quantForwardWith(kernels, { kind: 'none' }, 0, f, 3, 4).out)).toEqual(Array.from(f));
  });
});
