/**
 * The recipe ops in the ONNX graph against independent JavaScript computations of the semantics
 * in src/quant/recipe.ts (float64 arithmetic here; the graph runs in float32).
 */
import { afterAll, describe, expect, test } from 'vitest';
import { DataType } from '../../src/onnx/onnx-proto.js';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';
import { quantizeOp, rotateOp } from '../../src/onnx/recipe-ops.js';
import { createSession, floatTensor, type ort } from '../../src/onnx/session.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { quantizeRows } from '../../src/quant/quantizers.js';
import { lcg, randomOrthogonal, kroneckerRotateRow } from './helpers.js';

const sessions: ort.InferenceSession[] = [];
afterAll(async () => {
  for (const s of sessions) await s.release();
});

async function runQuantizer(x: Float32Array, shape: number[], q: ActivationQuantizer): Promise<Float32Array> {
  const g = new GraphBuilder('q');
  const input = g.input('x', DataType.FLOAT, shape);
  g.outputAs(quantizeOp(g, input, q), 'y', DataType.FLOAT, shape);
  const s = await createSession(g.encode(), { threads: 1 });
  sessions.push(s);
  return (await s.run({ x: floatTensor(x, shape) }))['y']!.data as Float32Array;
}

/** Independent float64 reference of one row. */
function referenceRow(row: number[], q: ActivationQuantizer): number[] {
  const abs = row.map(Math.abs);
  const mean = abs.reduce((a, b) => a + b, 0) / row.length;
  switch (q.kind) {
    case 'none':
      return row;
    case 'int': {
      const qmax = 2 ** (q.bits - 1) - 1;
      const amax = Math.max(...abs);
      const s = amax === 0 ? 1 : (q.clipRatio * amax) / qmax;
      const rhe = (v: number): number => {
        const f = Math.floor(v);
        const d = v - f;
        if (d > 0.5) return f + 1;
        if (d < 0.5) return f;
        return f % 2 === 0 ? f : f + 1;
      };
      return row.map((v) => Math.min(qmax, Math.max(-qmax, rhe(v / s))) * s);
    }
    case 'ternary': {
      const delta = q.thresholdRatio * mean;
      const kept = abs.filter((a) => a > delta);
      const s = kept.length === 0 ? 0 : kept.reduce((a, b) => a + b, 0) / kept.length;
      return row.map((v) => (Math.abs(v) > delta ? Math.sign(v) * s : 0));
    }
    case 'binary':
      return row.map((v) => (v >= 0 ? mean : -mean));
  }
}

function testRows(cols: number): { x: Float32Array; rows: number } {
  const rnd = lcg(11 + cols);
  const rows: number[][] = [];
  for (let r = 0; r < 6; r++) rows.push(Array.from({ length: cols }, () => (rnd() * 4) ** 3 * (r + 1)));
  rows.push(new Array<number>(cols).fill(0)); // degenerate row
  // ties for 6-bit int with clipRatio 1: max 31 → s = 1, so x/s = x exactly
  const ties = Array.from({ length: cols }, (_, j) => [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 30.5, -31][j % 8]!);
  ties[0] = 31;
  rows.push(ties);
  return { x: Float32Array.from(rows.flat()), rows: rows.length };
}

const QUANTIZERS: ActivationQuantizer[] = [
  { kind: 'int', bits: 6, clipRatio: 1 },
  { kind: 'int', bits: 6, clipRatio: 0.85 },
  { kind: 'int', bits: 4, clipRatio: 1 },
  { kind: 'int', bits: 8, clipRatio: 0.9 },
  { kind: 'ternary', thresholdRatio: 0.7 },
  { kind: 'ternary', thresholdRatio: 0 },
  { kind: 'binary' },
];

describe('quantizers per row of the last axis', () => {
  for (const q of QUANTIZERS) {
    test(JSON.stringify(q), async () => {
      const cols = 40;
      const { x, rows } = testRows(cols);
      const y = await runQuantizer(x, [rows, cols], q);
      const viaC = quantizeRows(x, cols, q);
      for (let r = 0; r < rows; r++) {
        const row = Array.from(x.subarray(r * cols, (r + 1) * cols));
        const ref = referenceRow(row, q);
        const scale = Math.max(1e-30, ...row.map(Math.abs));
        for (let j = 0; j < cols; j++) {
          const got = y[r * cols + j]!;
          expect(Number.isNaN(got)).toBe(false);
          expect(Math.abs(got - ref[j]!)).toBeLessThanOrEqual(1e-6 * scale);
          expect(Math.abs(got - viaC[r * cols + j]!)).toBeLessThanOrEqual(1e-6 * scale);
        }
      }
      // the all-zero row stays zero
      for (let j = 0; j < cols; j++) expect(y[6 * cols + j]).toBe(0);
      if (q.kind === 'int' && q.bits === 6 && q.clipRatio === 1) {
        // round half to even on exact ties: 0.5→0, 1.5→2, 2.5→2, -0.5→-0, -1.5→-2, -2.5→-2, 30.5→30
        expect(Array.from(y.subarray(7 * cols + 1, 7 * cols + 8))).toEqual([2, 2, -0, -2, -2, 30, -31]);
      }
    });
  }

  test('rank-4 input: each row of the last axis has its own scale', async () => {
    const shape = [2, 3, 4, 8];
    const rnd = lcg(5);
    const x = Float32Array.from({ length: 2 * 3 * 4 * 8 }, (_, i) => rnd() * (1 + (i >> 3)));
    const q: ActivationQuantizer = { kind: 'int', bits: 3, clipRatio: 1 };
    const y = await runQuantizer(x, shape, q);
    for (let r = 0; r < x.length / 8; r++) {
      const ref = referenceRow(Array.from(x.subarray(r * 8, r * 8 + 8)), q);
      for (let j = 0; j < 8; j++) expect(y[r * 8 + j]!).toBeCloseTo(ref[j]!, 5);
    }
  });
});

describe('Kronecker rotation X\' = R1ᵀ X R2', () => {
  test.each([
    [4, 8],
    [8, 8],
    [1, 16],
    [16, 1],
  ])('a=%i b=%i matches the index formula and is inverted by the transposes', async (a, b) => {
    const n = a * b;
    const shape = [2, 3, n];
    const rnd = lcg(a * 100 + b);
    const x = Float32Array.from({ length: 6 * n }, rnd);
    const r1 = randomOrthogonal(a, lcg(a));
    const r2 = randomOrthogonal(b, lcg(b + 1000));
    const g = new GraphBuilder('rot');
    const input = g.input('x', DataType.FLOAT, shape);
    const R1 = g.input('r1', DataType.FLOAT, [a, a]);
    const R2 = g.input('r2', DataType.FLOAT, [b, b]);
    const rotated = rotateOp(g, input, R1, R2, a, b);
    const back = rotateOp(g, rotated, g.transpose(R1, [1, 0]), g.transpose(R2, [1, 0]), a, b);
    g.outputAs(rotated, 'y', DataType.FLOAT, shape);
    g.outputAs(back, 'back', DataType.FLOAT, shape);
    const s = await createSession(g.encode(), { threads: 1 });
    sessions.push(s);
    const out = await s.run({ x: floatTensor(x, shape), r1: floatTensor(r1, [a, a]), r2: floatTensor(r2, [b, b]) });
    const y = out['y']!.data as Float32Array;
    const recovered = out['back']!.data as Float32Array;
    for (let r = 0; r < 6; r++) {
      const expected = kroneckerRotateRow(x.subarray(r * n, (r + 1) * n), r1, r2, a, b);
      for (let k = 0; k < n; k++) {
        expect(Math.abs(y[r * n + k]! - expected[k]!)).toBeLessThan(1e-5);
        expect(Math.abs(recovered[r * n + k]! - x[r * n + k]!)).toBeLessThan(1e-5);
      }
    }
  });
});
