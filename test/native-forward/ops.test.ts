/** Float building blocks: Kronecker rotation (quantizer's and native backend's) against the definition. */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { createFloatGemm } from '../../src/native/float-gemm.js';
import { rotateRows } from '../../src/native/quant-linear.js';
import { matmulTransB } from '../../src/native/transformer-ops.js';
import { rotateRows as referenceRotateRows } from '../../src/quant/kronecker.js';

function randn(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

describe('Kronecker rotation', () => {
  it.each([[4, 16, 3], [24, 32, 300], [1, 8, 5]])('a=%i b=%i rows=%i equals x (R1 ⊗ R2)', async (a, b, rows) => {
    const rng = new Rng(a * 100 + b);
    const n = a * b;
    const x = randn(rows * n, rng);
    const r1 = randn(a * a, rng);
    const r2 = randn(b * b, rng);
    // definition: x'[i·b + j] = Σ_{p,q} x[p·b + q]·R1[p, i]·R2[q, j]
    const expected = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) {
        let s = 0;
        for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) s += x[r * n + p * b + q]! * r1[p * a + i]! * r2[q * b + j]!;
        expected[r * n + i * b + j] = s;
      }
    }
    const rot = { r1, a, r2, b, names: ['r1', 'r2'] as const };
    const results = [
      referenceRotateRows(x, rows, r1, a, r2, b),
      await rotateRows(x, rows, rot, createFloatGemm('js')),
      await rotateRows(x, rows, rot, createFloatGemm('ort')),
    ];
    for (const got of results) {
      let maxErr = 0;
      for (let i = 0; i < got.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - expected[i]!));
      expect(maxErr).toBeLessThan(1e-4 * Math.sqrt(n));
    }
  });
});

describe('float GEMM', () => {
  it('ORT and TypeScript agree on A·Wᵀ and A·B above the ORT threshold', async () => {
    const rng = new Rng(5);
    const [m, k, n] = [130, 96, 200];
    const a = randn(m * k, rng);
    const w = randn(n * k, rng);
    const ref = matmulTransB(a, m, k, w, n);
    const ort = await createFloatGemm('ort').transB(a, m, k, w, n);
    // W as [k, n] for the plain product
    const b = new Float32Array(k * n);
    for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) b[p * n + j] = w[j * k + p]!;
    const plainJs = await createFloatGemm('js').plain(a, m, k, b, n);
    const plainOrt = await createFloatGemm('ort').plain(a, m, k, b, n);
    for (const got of [ort, plainJs, plainOrt]) {
      let maxErr = 0;
      for (let i = 0; i < got.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - ref[i]!));
      expect(maxErr).toBeLessThan(1e-4);
    }
  });
});
