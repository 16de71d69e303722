/**
 * The GEMM-blocked Cholesky (src/linalg/blocked-cholesky.ts) and column-block compensation (src/quant/column-blocks.ts)
 * against their float64 references (src/linalg/cholesky.ts, src/quant/hessian-blocks.ts), and the Cholesky against
 * numpy's diag(H⁻¹) of the BiLLM fixture (test/fixtures/quant/make_billm_arb_reference.py).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { Rng } from '../../src/linalg/random.js';
import { choleskyLower, invertLower, upperCholeskyOfInverse } from '../../src/linalg/cholesky.js';
import { inverseCholeskyFactor, upperCholeskyOfInverseGemm } from '../../src/linalg/blocked-cholesky.js';
import { prepareHessian, quantizeColumnBlocks } from '../../src/quant/hessian-blocks.js';
import { compensateColumnBlocks, compensationFrame } from '../../src/quant/column-blocks.js';
import { float64Product, relDiff } from '../helpers/reference-math.js';

const fixture = fileURLToPath(new URL('../fixtures/quant/billm_arb_reference.safetensors', import.meta.url));
let x: Float64Array;
let hinvDiag: Float64Array;

beforeAll(async () => {
  const file = await SafetensorsFile.open(fixture);
  try {
    const read = async (name: string): Promise<Float64Array> => new Float64Array((await file.readBytes(name)).slice().buffer);
    x = await read('x');
    hinvDiag = await read('hinv_diag');
  } finally {
    await file.close();
  }
});

/** Gram of random rows [tokens, cols] (float64) */
function randomGram(tokens: number, cols: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const scale = Float64Array.from({ length: cols }, () => Math.exp(rng.normal()));
  const rows = Float64Array.from({ length: tokens * cols }, (_, i) => rng.normal() * scale[i % cols]!);
  return float64Product(rows, rows, cols, tokens, cols, true);
}

describe('GEMM-blocked Cholesky', () => {
  it('L⁻¹ A L⁻ᵀ = I and L⁻¹ as the float64 reference on a 300 × 300 SPD matrix (two levels of blocking)', async () => {
    const n = 300;
    const a = randomGram(360, n, 3);
    const inverse = await inverseCholeskyFactor(Float32Array.from(a), n, jsMatmul);
    const eye = float64Product(float64Product(inverse, a, n, n, n), inverse, n, n, n, false, true);
    expect(relDiff(eye, Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0)))).toBeLessThan(1e-3);
    expect(relDiff(inverse, invertLower(choleskyLower(a, n), n))).toBeLessThan(1e-4);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) expect(inverse[i * n + j]).toBe(0);
  });

  it("U (H⁻¹ = UᵀU) of the BiLLM fixture's damped Hessian: diag(H⁻¹) as numpy, U as the float64 reference", async () => {
    const cols = 200;
    const tokens = 96;
    const h = float64Product(x, x, cols, tokens, cols, true).map((v) => (2 / tokens) * v);
    const prepared = prepareHessian(h, cols, 0.01); // the fixture's dead channel 7 and damping, in float64
    const damped = Float64Array.from(h);
    let mean = 0;
    damped[7 * cols + 7] = 1;
    for (let j = 0; j < cols; j++) mean += damped[j * cols + j]! / cols;
    for (let j = 0; j < cols; j++) damped[j * cols + j] = damped[j * cols + j]! + 0.01 * mean;
    const u = await upperCholeskyOfInverseGemm(Float32Array.from(damped), cols, jsMatmul);
    expect(relDiff(u, prepared.u)).toBeLessThan(1e-4);
    const diag = new Float64Array(cols);
    for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) diag[j] = diag[j]! + u[i * cols + j]! ** 2;
    expect(relDiff(diag, hinvDiag)).toBeLessThan(1e-4);
    expect(relDiff(u, upperCholeskyOfInverse(damped, cols).u)).toBeLessThan(1e-4);
  });
});

describe('column-block compensation with GEMMs', () => {
  const rows = 12;
  const cols = 1100; // two spans of 1024 columns: the deferred update runs
  const rng = new Rng(11);
  const w = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const alpha = Float64Array.from({ length: rows }, (_, r) => {
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.abs(w[r * cols + c]!);
    return s / cols;
  });
  const signBlock = (block: ArrayLike<number>, r: number, width: number): number[] =>
    Array.from({ length: r * width }, (_, i) => (block[i]! >= 0 ? alpha[Math.floor(i / width)]! : -alpha[Math.floor(i / width)]!));
  /** tr((W − Q) H (W − Q)ᵀ) */
  const proxy = (q: ArrayLike<number>, h: Float64Array): number => {
    const e = Float64Array.from(w, (v, i) => v - q[i]!);
    const eh = float64Product(e, h, rows, cols, cols);
    let s = 0;
    for (let i = 0; i < e.length; i++) s += eh[i]! * e[i]!;
    return s;
  };

  it('equals the float64 frame (blocks of 128, 10 % damping) and lowers the output proxy error of plain signs', async () => {
    const h = randomGram(400, cols, 5);
    const reference = quantizeColumnBlocks(w, rows, cols, prepareHessian(h, cols, 0.1), 128, (b, r, width) => Float64Array.from(signBlock(b, r, width)));
    const frame = await compensationFrame(Float32Array.from(h), cols, 0.1, jsMatmul);
    const q = await compensateColumnBlocks(w, rows, cols, frame!, 128, (b, r, width) => Float32Array.from(signBlock(b, r, width)), jsMatmul);
    let same = 0;
    for (let i = 0; i < q.length; i++) if (Math.sign(q[i]!) === Math.sign(reference[i]!)) same++;
    expect(same / q.length).toBeGreaterThan(0.998);
    const plain = proxy(signBlock(w, rows, cols), h);
    const compensated = proxy(q, h);
    expect(Math.abs(compensated - proxy(reference, h)) / compensated).toBeLessThan(2e-3);
    expect(compensated).toBeLessThan(0.8 * plain);
  }, 60_000);

  it('no frame without signal; a wrong frame width is refused', async () => {
    expect(await compensationFrame(new Float32Array(16), 4, 0.1, jsMatmul)).toBeUndefined();
    const frame = await compensationFrame(Float32Array.from(randomGram(8, 4, 1)), 4, 0.1, jsMatmul);
    await expect(compensateColumnBlocks(new Float32Array(10), 2, 5, frame!, 2, (b) => Float32Array.from(b), jsMatmul)).rejects.toThrow(/frame of 4 columns for 5/);
  });
});
