import { describe, expect, it } from 'vitest';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { Rng } from '../../src/linalg/random.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { deviceMatmul } from '../../src/pipeline/device-matmul.js';
import { transposeF32 } from '../../src/linalg/dense.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { createRuntimeBlockEngine } from '../../src/runtime/block-runner.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { float64Product, relDiff } from '../helpers/reference-math.js';

function random(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
}

describe('the quantize numerics\' matmul on the block engine\'s device', () => {
  const [m, k, n] = [37, 53, 29];
  const rng = new Rng(7);
  const a = random(m * k, rng);
  const b = random(k * n, rng);
  const cases = [
    { options: {}, a, b },
    { options: { transposeA: true }, a: transposeF32(a, m, k), b },
    { options: { transposeB: true }, a, b: transposeF32(b, k, n) },
    { options: { transposeA: true, transposeB: true }, a: transposeF32(a, m, k), b: transposeF32(b, k, n) },
  ];

  it('passes every transposition case to the device as flags and agrees with a float64 product', async () => {
    const reference = float64Product(a, b, m, k, n);
    const deviceCalls: string[] = [];
    const onDevice = (x: Float32Array, ta: boolean, y: Float32Array, tb: boolean, rows: number, kk: number, cols: number): Float32Array => {
      deviceCalls.push(`${ta}/${tb}`);
      const out = new Float32Array(rows * cols);
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let p = 0; p < kk; p++) s += x[ta ? p * rows + i : i * kk + p]! * y[tb ? j * kk + p : p * cols + j]!;
        out[i * cols + j] = s;
      }
      return out;
    };
    const hostCalls: string[] = [];
    const host = async (...args: Parameters<typeof jsMatmul>) => { hostCalls.push('host'); return jsMatmul(...args); };
    for (const c of cases) {
      const got = await deviceMatmul(onDevice, host, 0)(c.a, c.b, m, k, n, c.options);
      expect(relDiff(got, reference)).toBeLessThan(1e-6);
    }
    // the operands reach the device as given (no host transposition), with the flags
    expect(deviceCalls).toEqual(['false/false', 'true/false', 'false/true', 'true/true']);
    expect(hostCalls).toHaveLength(0);
    // below the threshold the host GEMM answers
    await deviceMatmul(onDevice, host)(a, b, m, k, n);
    expect([deviceCalls.length, hostCalls.length]).toEqual([4, 1]);
  });

  it.runIf(runtimeAvailable())('the runtime\'s native matmul (CPU backend) equals a float64 product to float32 rounding', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      expect(engine.matmulT).toBeDefined();
      const reference = float64Product(a, b, m, k, n);
      for (const c of cases) {
        const got = await deviceMatmul(engine.matmulT!, jsMatmul, 0)(c.a, c.b, m, k, n, c.options);
        expect(relDiff(got, reference)).toBeLessThan(1e-5);
      }
      expect(() => engine.matmulT!(new Float32Array(3), false, new Float32Array(4), true, 2, 2, 2)).toThrow(/smaller than m x k/);
    } finally {
      await engine.close();
      await model.checkpoint.close();
    }
  });
});
